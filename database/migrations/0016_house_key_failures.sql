-- 0016: the last failure of each house key, by the setting that holds it
-- (never its value), shared by every worker and instance: a key refused or
-- rate-limited in one worker shows on the admins' house-key page whichever
-- worker answers it. Written only when a provider refuses a house key, which
-- is rare, so a call pays for it only when it is already failing over.
CREATE TABLE house_key_failures (
    provider  text        NOT NULL,
    setting   text        NOT NULL,
    status    smallint    NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now(),
    failures  bigint      NOT NULL DEFAULT 1,
    PRIMARY KEY (provider, setting)
);

GRANT SELECT, INSERT, UPDATE ON house_key_failures TO app_user;
