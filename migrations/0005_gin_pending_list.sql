-- Small GIN pending lists on the recall indexes.
-- depends: 0004_idempotency

-- Every send inserts into messages_recall_idx and then searches it. A GIN index queues new entries in
-- a pending list that every search reads in full, until the list outgrows gin_pending_list_limit
-- (4 MB by default) and one insert moves it into the index. With 4 MB, a recall after 20,000 inserts
-- cost 1.3-1.8 ms against 0.3 ms just after a flush; with 256 kB it stayed at 0.3 ms, and inserts cost
-- the same (closing note of issue 6).
ALTER INDEX messages_recall_idx SET (gin_pending_list_limit = 256);
ALTER INDEX memories_recall_idx SET (gin_pending_list_limit = 256);
