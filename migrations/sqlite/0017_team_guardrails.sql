-- A team's guardrails (JSON, docs/guardrails.md), applied on every route after the route's own.
ALTER TABLE teams ADD COLUMN guardrails TEXT;
