-- Native provider APIs: a second credential (Baidu v1 Secret Key, Tencent
-- SecretKey), encrypted like api_key; and the token details providers report.
ALTER TABLE providers ADD COLUMN secret_key_encrypted TEXT;
ALTER TABLE usage_records ADD COLUMN cached_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN reasoning_tokens BIGINT NOT NULL DEFAULT 0;
