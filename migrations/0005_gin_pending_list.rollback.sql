ALTER INDEX messages_recall_idx RESET (gin_pending_list_limit);
ALTER INDEX memories_recall_idx RESET (gin_pending_list_limit);
