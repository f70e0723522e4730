-- Schema for the task service. Runs inside the database it is given (no CREATE DATABASE / USE),
-- and must load unchanged on MySQL 8.4 and MariaDB 10.11.
-- All DATETIME values are UTC: every connection of the services sets time_zone = '+00:00'.

CREATE TABLE IF NOT EXISTS tasks (
    id               VARCHAR(36)  NOT NULL,
    title            VARCHAR(255) NOT NULL,
    -- MEDIUMTEXT rather than TEXT: the API accepts 64 KiB of UTF-8, and TEXT stops at 65,535 bytes.
    description      MEDIUMTEXT,
    status           ENUM('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED') NOT NULL DEFAULT 'PENDING',
    metadata         JSON         NULL,
    -- How many times a worker has claimed the task; a claim is an attempt.
    attempts         INT UNSIGNED NOT NULL DEFAULT 0,
    -- A short, safe summary of the last failed attempt.
    last_error       VARCHAR(500) NULL DEFAULT NULL,
    -- The outbox mark: NULL until the broker has confirmed the task's message. Written in the
    -- same statement as the task, so a task can never exist without it; the dispatcher
    -- publishes whatever stays NULL (broker down, process died between commit and publish).
    dispatched_at    DATETIME(6)  NULL DEFAULT NULL,
    -- While PROCESSING: until when the claiming worker holds the task. A duplicate message
    -- seen before then is dropped; after it (or on a redelivery) the task may be claimed again.
    lease_expires_at DATETIME(6)  NULL DEFAULT NULL,
    -- Which claim or completion wrote the row last: a worker writes a batch of rows in one
    -- UPDATE, then reads back which of them carry its token.
    claim_token      CHAR(32)     NULL DEFAULT NULL,
    created_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    completed_at     DATETIME(6)  NULL DEFAULT NULL,
    PRIMARY KEY (id),
    KEY idx_tasks_status_created (status, created_at),
    KEY idx_tasks_undispatched (dispatched_at, updated_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
