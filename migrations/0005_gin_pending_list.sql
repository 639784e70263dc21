-- Small GIN pending lists on the recall indexes.
-- depends: 0004_idempotency

-- Every send inserts into messages_recall_idx and then searches it. A GIN index queues new entries in
-- a pending list that every search reads in full, until the list outgrows gin_pending_list_limit
-- (4 MB by default) and one insert moves it into the index. At 4 MB a recall cost about three times
-- what it cost just after a flush (closing note of issue 6); 256 kB keeps searches near that cost and
-- each flush short. fastupdate = off (no list at all) made each send's insert dearer than it saved.
ALTER INDEX messages_recall_idx SET (gin_pending_list_limit = 256);
ALTER INDEX memories_recall_idx SET (gin_pending_list_limit = 256);
