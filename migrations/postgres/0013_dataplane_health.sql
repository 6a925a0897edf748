-- Each data plane's open circuit breakers (a JSON list of {provider, model}), as it last reported them.
ALTER TABLE dataplanes ADD COLUMN open_breakers TEXT NOT NULL DEFAULT '[]';
