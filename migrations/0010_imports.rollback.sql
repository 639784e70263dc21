UPDATE memory_events SET source = 'api' WHERE source = 'import';
ALTER TABLE memory_events DROP CONSTRAINT memory_events_source_check;
ALTER TABLE memory_events ADD CONSTRAINT memory_events_source_check CHECK (source IN ('api', 'extraction'));
DROP TABLE chat_imports;
