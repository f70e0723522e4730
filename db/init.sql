-- Schema for the task service. Runs inside the database it is given (no CREATE DATABASE / USE),
-- and must load unchanged on MySQL 8.4 and MariaDB 10.11.
-- All DATETIME values are UTC: every connection of the services sets time_zone = '+00:00'.
--
-- This is the schema at the newest migration (db/migrations), and it records that revision in
-- alembic_version, so a database made from it is at head: `make migrate` has nothing to do.
-- A test holds it equal to an empty database taken through every migration.

CREATE TABLE IF NOT EXISTS tasks (
    id               VARCHAR(36)  NOT NULL,
    -- Whose task it is: the name of the API key that created it ('' while the API runs
    -- without keys). A caller sees, lists and counts only its own tenant's tasks.
    tenant           VARCHAR(64)  NOT NULL DEFAULT '',
    title            VARCHAR(255) NOT NULL,
    -- MEDIUMTEXT rather than TEXT: the API accepts 64 KiB of UTF-8, and TEXT stops at 65,535 bytes.
    description      MEDIUMTEXT,
    status           ENUM('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED') NOT NULL DEFAULT 'PENDING',
    metadata         JSON         NULL,
    -- What the task runs: a name from the catalogue (common/task_types.py), its input
    -- (validated against the type's model at submit) and the time an attempt may take (NULL:
    -- the type's default).
    type             VARCHAR(64)  NOT NULL DEFAULT 'simulated',
    payload          JSON         NULL,
    timeout_seconds  INT UNSIGNED NULL DEFAULT NULL,
    -- When the task may start (a scheduled task: the dispatcher publishes it once due), or
    -- NULL: at once.
    run_at           DATETIME(6)  NULL DEFAULT NULL,
    -- Where its completion webhook goes once it is final (NULL: none); checked at submit.
    callback_url     VARCHAR(2048) NULL DEFAULT NULL,
    -- How many times a worker has claimed the task; a claim is an attempt.
    attempts         INT UNSIGNED NOT NULL DEFAULT 0,
    -- A short, safe summary of the last failed attempt.
    last_error       VARCHAR(500) NULL DEFAULT NULL,
    -- What the handler returned, written with COMPLETED (at most RESULT_MAX_BYTES of JSON).
    result           JSON         NULL,
    -- How far the running attempt is, as its handler last reported (0.0-1.0), with an
    -- optional note; 1.0 and no note once COMPLETED, NULL again when an attempt starts.
    progress         DOUBLE       NULL DEFAULT NULL,
    progress_note    VARCHAR(255) NULL DEFAULT NULL,
    -- The outbox mark: NULL until the broker has confirmed the task's message. Written in the
    -- same statement as the task, so a task can never exist without it; the dispatcher
    -- publishes whatever stays NULL (broker down, process died between commit and publish).
    dispatched_at    DATETIME(6)  NULL DEFAULT NULL,
    -- While PROCESSING: until when the claiming worker holds the task. A duplicate message
    -- seen before then is dropped; after it (or on a redelivery) the task may be claimed again.
    lease_expires_at DATETIME(6)  NULL DEFAULT NULL,
    -- Which transition wrote the row last: each writes a token of its own, then copies the rows
    -- that carry it into task_events (and a worker's batch reads back which rows it moved).
    claim_token      CHAR(32)     NULL DEFAULT NULL,
    created_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    -- The first claim's time (an attempt may start again later; this one stays).
    started_at       DATETIME(6)  NULL DEFAULT NULL,
    completed_at     DATETIME(6)  NULL DEFAULT NULL,
    PRIMARY KEY (id),
    -- The list, newest first, paged by (created_at, id): one index for all of a tenant's
    -- tasks, one per status (a list of several statuses reads each status's range and merges).
    KEY idx_tasks_tenant_created (tenant, created_at, id),
    KEY idx_tasks_tenant_status_created (tenant, status, created_at, id),
    -- The dashboard's filter by type: a tenant's tasks of one type, newest first.
    KEY idx_tasks_tenant_type_created (tenant, type, created_at, id),
    -- The outbox: undispatched tasks to send now (run_at NULL, by updated_at) and scheduled
    -- ones that are due (by run_at), each one index range however many wait for later.
    KEY idx_tasks_undispatched (dispatched_at, run_at, updated_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Every transition of a task, written in the same transaction as the transition itself, so an
-- event can be neither lost nor invented. The id orders all events (Server-Sent Events use it
-- as the event id); a task's events are read by (task_id, id).
CREATE TABLE IF NOT EXISTS task_events (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    task_id    VARCHAR(36)  NOT NULL,
    -- created, started, progress, retry_scheduled, completed, failed, cancelled, redriven
    kind       VARCHAR(32)  NOT NULL,
    -- The task's status and attempts just after the transition.
    status     ENUM('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED') NOT NULL,
    attempts   INT UNSIGNED NOT NULL,
    error      VARCHAR(500) NULL DEFAULT NULL,
    -- The task's progress and note just after it (a `progress` event is a report of them).
    progress   DOUBLE       NULL DEFAULT NULL,
    note       VARCHAR(255) NULL DEFAULT NULL,
    created_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (id),
    KEY idx_task_events_task (task_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Idempotency-Key of POST /api/tasks: the first request with a key stores it with the task it
-- created, in the same transaction, so a key can never name a task that was not stored.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    -- Who sent it: the API key's name once keys are on, '' while the API runs open.
    client      VARCHAR(64)  NOT NULL,
    idem_key    VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    -- SHA-256 of the request body's canonical JSON: the same key with another body is refused.
    fingerprint BINARY(32)   NOT NULL,
    task_id     VARCHAR(36)  NOT NULL,
    created_at  DATETIME(6)  NOT NULL,
    expires_at  DATETIME(6)  NOT NULL,
    PRIMARY KEY (client, idem_key),
    KEY idx_idempotency_keys_expires (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Completion webhooks (Standard Webhooks): one delivery for each final state a task with a
-- callback_url reaches, inserted by that transition in its own transaction (the webhooks'
-- outbox), then sent and retried by the webhook sender (api-service/src/sender.py).
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    -- The webhook-id header: the same on every attempt of this delivery.
    webhook_id       VARCHAR(40)  NOT NULL,
    task_id          VARCHAR(36)  NOT NULL,
    url              VARCHAR(2048) NOT NULL,
    -- The final status it reports.
    status           ENUM('COMPLETED', 'FAILED', 'CANCELLED') NOT NULL,
    state            ENUM('pending', 'delivered', 'failed') NOT NULL DEFAULT 'pending',
    -- Attempts started (counted when a sender takes the delivery, so a sender that dies
    -- mid-attempt still counts it).
    attempts         INT UNSIGNED NOT NULL DEFAULT 0,
    -- While pending: when a sender may take it next (also the lease of a sender that took it).
    next_attempt_at  DATETIME(6)  NOT NULL,
    last_status_code SMALLINT UNSIGNED NULL DEFAULT NULL,
    last_error       VARCHAR(500) NULL DEFAULT NULL,
    -- The JSON sent: the task as GET shows it, fixed at the first attempt (and dropped once
    -- the delivery is over: only a retry needs it).
    body             MEDIUMTEXT   NULL,
    created_at       DATETIME(6)  NOT NULL,
    updated_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    PRIMARY KEY (id),
    UNIQUE KEY uq_webhook_deliveries_webhook_id (webhook_id),
    KEY idx_webhook_deliveries_due (state, next_attempt_at),
    KEY idx_webhook_deliveries_task (task_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- How many tasks each tenant has in each status, kept by the transitions themselves
-- (common/mysql/counts.py): GET /api/tasks/stats sums at most 80 rows of the caller's tenant
-- instead of counting a status index. Each status has 16 shards, and a transition changes its
-- connection's shard, so that writers on different connections do not queue on one row lock;
-- a tenant's rows appear with its first transitions. A shard may go below zero; the sums never do.
CREATE TABLE IF NOT EXISTS task_counts (
    tenant VARCHAR(64) NOT NULL DEFAULT '',
    status ENUM('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED') NOT NULL,
    shard  TINYINT UNSIGNED NOT NULL,
    n      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, status, shard)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- For the tenant '' (no key): every status x shards 0-15, at zero, as migration 0003 made
-- them (IGNORE: running this file again keeps the counts).
INSERT IGNORE INTO task_counts (tenant, status, shard, n)
SELECT '', s.status, a.d * 4 + b.d, 0
FROM (SELECT 'PENDING' AS status UNION ALL SELECT 'PROCESSING' UNION ALL SELECT 'COMPLETED'
      UNION ALL SELECT 'FAILED' UNION ALL SELECT 'CANCELLED') AS s
CROSS JOIN (SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) AS a
CROSS JOIN (SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) AS b;

-- How many tasks each tenant submitted and completed in each UTC minute, kept by the
-- transitions themselves as task_counts is (common/mysql/counts.py), on the shard of their
-- connection: the dashboard's throughput chart sums an hour of them. The API deletes minutes
-- older than a day.
CREATE TABLE IF NOT EXISTS task_throughput (
    tenant    VARCHAR(64)      NOT NULL DEFAULT '',
    minute    DATETIME         NOT NULL,
    shard     TINYINT UNSIGNED NOT NULL,
    submitted INT UNSIGNED     NOT NULL DEFAULT 0,
    completed INT UNSIGNED     NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, minute, shard)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Alembic's own table, as `make migrate` creates it (on MySQL a primary key is always named
-- PRIMARY, so Alembic's constraint name would change nothing), with the revision of this file.
CREATE TABLE IF NOT EXISTS alembic_version (
    version_num VARCHAR(32) NOT NULL,
    PRIMARY KEY (version_num)
);

-- Only into an empty table, so that running this file again changes nothing. Keep the revision
-- equal to the newest migration's (and to SCHEMA_REVISION in common/mysql/revision.py).
INSERT INTO alembic_version (version_num)
SELECT '0007' FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM alembic_version);
