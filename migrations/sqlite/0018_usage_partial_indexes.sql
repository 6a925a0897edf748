-- Ingestion writes every index of usage_records for every record. These four
-- now hold only the records that have the value: a key without a user or a
-- team, an untraced request, and a request id that is the record's own id
-- (the data plane makes them one when the client sent no x-request-id) cost
-- no index entry. Lookups by each still use them: `user_id = $1` implies
-- `user_id IS NOT NULL`, and the request-id lookup asks for the two cases.
DROP INDEX usage_records_user;
CREATE INDEX usage_records_user ON usage_records (user_id, created_at) WHERE user_id IS NOT NULL;
DROP INDEX usage_records_team;
CREATE INDEX usage_records_team ON usage_records (team_id, created_at) WHERE team_id IS NOT NULL;
DROP INDEX usage_records_request;
CREATE INDEX usage_records_request ON usage_records (request_id) WHERE request_id <> id;
DROP INDEX usage_records_trace;
CREATE INDEX usage_records_trace ON usage_records (trace_id) WHERE trace_id IS NOT NULL;
