-- Every statement the SQLite backend runs, by name. Parsed once at import.
-- Times are Unix epoch seconds (REAL). `delay_until` keeps its 0.1.3 name and
-- means "not before": the run-at time of a delayed task.

-- name: create_tasks
-- The 0.1.3 table, so that files made by either version open in both, except that a
-- new file's has no AUTOINCREMENT: its sqlite_sequence row was one more page to write
-- per commit (about 15% of a one-call enqueue). Ids are still never given twice: see
-- next_id. (A file made by 0.1.3 keeps its AUTOINCREMENT; both kinds work alike.)
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    args BLOB,
    status TEXT DEFAULT 'pending',
    retries INTEGER DEFAULT 0,
    delay_until INTEGER
);

-- name: create_high
-- The highest task id ever deleted (0 if none, or none above the ids that remain).
-- Without AUTOINCREMENT, SQLite gives a new row the highest id in the table plus one,
-- which would give a deleted task's id again; every insert takes next_id instead.
CREATE TABLE IF NOT EXISTS simplepyq_high (id INTEGER NOT NULL);

-- name: create_high_trigger
-- Kept by every delete, whoever runs it (0.1.3's processes included). Deletes of old
-- tasks, the usual kind, leave it alone.
CREATE TRIGGER IF NOT EXISTS simplepyq_high_kept AFTER DELETE ON tasks
WHEN OLD.id > (SELECT id FROM simplepyq_high)
BEGIN
    UPDATE simplepyq_high SET id = OLD.id;
END;

-- name: init_high
-- On creation: a file made with AUTOINCREMENT may have deleted ids above MAX(id),
-- which only its sqlite_sequence remembers (:sequence: that, or 0).
INSERT INTO simplepyq_high (id)
SELECT MAX(COALESCE((SELECT MAX(id) FROM tasks), 0), :sequence)
WHERE NOT EXISTS (SELECT 1 FROM simplepyq_high);

-- name: has_sequence
-- Whether the file has sqlite_sequence (some table of it has AUTOINCREMENT).
SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence';

-- name: tasks_sequence
SELECT seq FROM sqlite_sequence WHERE name = 'tasks';

-- name: next_id
-- The id of the next task inserted (under the write lock): above every id the table
-- holds or ever held. Each INSERT INTO tasks names it (as {next_id}).
(SELECT MAX(COALESCE((SELECT MAX(id) FROM tasks), 0), id) + 1 FROM simplepyq_high)

-- name: added_columns
-- Columns this version adds to a 0.1.3 table, one per line (ALTER TABLE ... ADD COLUMN).
priority INTEGER NOT NULL DEFAULT 0
attempts INTEGER NOT NULL DEFAULT 0
result BLOB
error TEXT
created_at REAL
started_at REAL
finished_at REAL
owner TEXT
recoveries INTEGER NOT NULL DEFAULT 0
history TEXT
alone INTEGER NOT NULL DEFAULT 0
key TEXT
time_limit REAL
cancel_requested INTEGER NOT NULL DEFAULT 0
progress BLOB

-- name: create_channels
-- Channels any process registered, with the limits every process obeys when it
-- claims their tasks (NULL: no limit): at most rate_count starts in any
-- rate_period seconds, at most max_running tasks running at once.
CREATE TABLE IF NOT EXISTS simplepyq_channels (
    name TEXT PRIMARY KEY,
    registered_at REAL,
    rate_count INTEGER,
    rate_period REAL,
    max_running INTEGER
);

-- name: added_channel_columns
-- Columns schema 4 adds to the channels table of older files, one per line.
rate_count INTEGER
rate_period REAL
max_running INTEGER

-- name: create_starts
-- When tasks of rate-limited channels started (were claimed): a claim counts the
-- starts of the last rate_period and deletes older ones, so the table holds at most
-- about rate_count rows per limited channel.
CREATE TABLE IF NOT EXISTS simplepyq_starts (
    channel TEXT NOT NULL,
    started_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS simplepyq_starts_channel ON simplepyq_starts (channel, started_at);

-- name: create_owners
-- Queue instances that may hold running tasks; recovery reads them to find the dead.
CREATE TABLE IF NOT EXISTS simplepyq_owners (
    owner TEXT PRIMARY KEY,
    host TEXT,
    pid INTEGER,
    pid_start TEXT,
    heartbeat_at REAL,
    channels TEXT
);

-- name: added_owner_columns
-- Columns schema 3 adds to the owners table of older files, one per line.
channels TEXT

-- name: create_indexes
-- Each status that workers look for has its own small partial index, so claiming,
-- counting unfinished work and recovering never walk finished tasks, nor delayed
-- ones that are not due. Finished (done) tasks are in no index but the table's:
-- each index costs every enqueue and every state change a page write.
CREATE INDEX IF NOT EXISTS tasks_claim ON tasks (channel, priority DESC, id)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (channel, COALESCE(delay_until, 0))
    WHERE status = 'delayed';
CREATE INDEX IF NOT EXISTS tasks_running ON tasks (channel, owner) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS tasks_failed ON tasks (channel) WHERE status = 'failed';
-- A channel holds at most one unfinished task per key: the index, not a query before
-- the insert, decides, so concurrent enqueues of one key make one task. Tasks
-- without a key are not in it and cost nothing.
CREATE UNIQUE INDEX IF NOT EXISTS tasks_key ON tasks (channel, key)
    WHERE key IS NOT NULL AND status IN ('pending', 'delayed', 'running', 'blocked');
-- Every task with a key, finished ones included, newest last: a listing filtered by
-- key (recent_tasks) reads its few tasks here instead of walking the table. Tasks
-- without a key are not in it, and no status change touches it (SQLite writes an
-- index only where the columns it names change, and it names no status).
CREATE INDEX IF NOT EXISTS tasks_keyed ON tasks (key, id) WHERE key IS NOT NULL;

-- name: retired_indexes
-- Indexes of schema 1 that schema 2 replaced (tasks_running gained the channel).
DROP INDEX IF EXISTS tasks_channel_status;
DROP INDEX IF EXISTS tasks_running;

-- name: adopt_legacy_channels
-- Channels of tasks made by 0.1.3 (which did not store channel names) become known.
INSERT OR IGNORE INTO simplepyq_channels (name, registered_at)
    SELECT DISTINCT channel, :now FROM tasks;

-- name: register_channel
INSERT OR IGNORE INTO simplepyq_channels (name, registered_at) VALUES (:name, :now);

-- name: channel_exists
SELECT 1 FROM simplepyq_channels WHERE name = :name;

-- name: known_channels
SELECT name FROM simplepyq_channels;

-- name: add
-- Tasks sharing everything but their args, many in one statement: binding eight
-- values per row would cost more than the insert itself. ?1-?7 are the shared
-- values; {rows} stands for one add_row per task, its args in ?8, ?9 and so on.
-- Each gets the table's highest id plus one, as SQLite gives it, unless a task with
-- a higher one was deleted: then add_ids runs instead.
INSERT INTO tasks (channel, args, status, retries, delay_until, priority, attempts,
                   created_at, time_limit)
VALUES {rows};

-- name: add_row
(?1, ?{args}, ?2, ?3, ?4, ?5, 0, ?6, ?7)

-- name: add_ids
-- add, naming each id: ?8 is the first (next_id), the args are in ?9, ?10 and so on.
INSERT INTO tasks (id, channel, args, status, retries, delay_until, priority, attempts,
                   created_at, time_limit)
VALUES {rows};

-- name: add_ids_row
(?8 + {place}, ?1, ?{args}, ?2, ?3, ?4, ?5, 0, ?6, ?7)

-- name: first_id
-- next_id, and the id SQLite would give (the highest plus one): equal unless the
-- newest tasks were deleted.
SELECT {next_id}, COALESCE((SELECT MAX(id) FROM tasks), 0) + 1;

-- name: add_one
-- One task, if its channel is known: the whole enqueue in one statement, committed
-- on its own (no BEGIN, no COMMIT to run). A missing channel makes the channel NULL,
-- which the NOT NULL column refuses and OR IGNORE turns into no row: the caller
-- then takes the long way, which registers it or names the known ones. (VALUES, not
-- INSERT ... SELECT ... WHERE EXISTS: a SELECT that reads tasks, as next_id does,
-- would be run into a temporary table first, a quarter of the statement's cost.)
INSERT OR IGNORE INTO tasks (id, channel, args, status, retries, delay_until, priority,
                             attempts, created_at, time_limit)
VALUES ({next_id}, (SELECT name FROM simplepyq_channels WHERE name = ?1), ?8, ?2, ?3, ?4,
        ?5, 0, ?6, ?7);

-- name: add_keyed
-- One task with a key; nothing if an unfinished task of the channel holds the key
-- (the conflict target names the partial unique index tasks_key).
INSERT INTO tasks (id, channel, args, status, retries, delay_until, priority, attempts,
                   created_at, time_limit, key)
VALUES ({next_id}, :channel, :args, :status, :retries, :run_at, :priority, 0, :now,
        :time_limit, :key)
ON CONFLICT (channel, key)
    WHERE key IS NOT NULL AND status IN ('pending', 'delayed', 'running', 'blocked')
DO NOTHING;

-- name: key_holder
-- The unfinished task of a channel that holds a key.
SELECT id FROM tasks
WHERE channel = :channel AND key = :key
  AND status IN ('pending', 'delayed', 'running', 'blocked');

-- name: promote_due
-- Delayed tasks whose time has come become pending, as in 0.1.3 (a NULL time is due).
UPDATE tasks SET status = 'pending'
WHERE channel = :channel AND status = 'delayed'
  AND COALESCE(delay_until, 0) <= :now;

-- name: make_due
-- Delayed tasks of a channel become pending now, their time brought forward (a drain
-- in a test that treats delayed tasks as due).
UPDATE tasks SET status = 'pending', delay_until = :now
WHERE channel = :channel AND status = 'delayed';

-- name: claim
-- Marks the next due tasks running for :owner, and returns them in no particular
-- order (the caller sorts by priority, then id). The subquery walks tasks_claim.
UPDATE tasks
SET status = 'running', owner = :owner, started_at = :now, finished_at = NULL,
    attempts = COALESCE(attempts, 0) + 1
WHERE id IN (SELECT id FROM tasks
             WHERE channel = :channel AND status = 'pending'
             ORDER BY priority DESC, id
             LIMIT :limit)
RETURNING id, args, CAST(COALESCE(retries, 0) AS INTEGER), CAST(attempts AS INTEGER),
          CAST(COALESCE(priority, 0) AS INTEGER), CAST(COALESCE(recoveries, 0) AS INTEGER),
          time_limit;

-- name: channel_limits
-- Read first in every claim: a channel without limits is claimed as above, at no
-- further cost; one with limits claims no more than they allow (below).
SELECT rate_count, rate_period, max_running FROM simplepyq_channels WHERE name = :channel;

-- name: running_count
SELECT COUNT(*) FROM tasks WHERE channel = :channel AND status = 'running';

-- name: forget_starts
DELETE FROM simplepyq_starts WHERE channel = :channel AND started_at <= :since;

-- name: recent_starts
-- The starts of the current window (forget_starts ran first): how many, and the oldest.
SELECT COUNT(*), MIN(started_at) FROM simplepyq_starts WHERE channel = :channel;

-- name: forget_all_starts
DELETE FROM simplepyq_starts WHERE channel = :channel;

-- name: set_limits
-- Each limit changes only if :set_rate / :set_max say so; NULL removes it.
UPDATE simplepyq_channels
SET rate_count = CASE WHEN :set_rate THEN :rate_count ELSE rate_count END,
    rate_period = CASE WHEN :set_rate THEN :rate_period ELSE rate_period END,
    max_running = CASE WHEN :set_max THEN :max_running ELSE max_running END
WHERE name = :channel
RETURNING rate_count, rate_period, max_running;

-- name: all_limits
SELECT name, rate_count, rate_period, max_running FROM simplepyq_channels;

-- name: record
-- Only the owner of a running task may record its outcome: a task recovered
-- from an owner given up for dead, or deleted meanwhile, is left as it is.
-- A run that did not succeed (:outcome is not NULL) is added to the task's history,
-- which keeps the last 10 such runs; any recorded run ends a
-- series of recoveries.
-- A run of a task whose cancel was requested that did not succeed ends it cancelled,
-- whatever its outcome asked for (a retry, a deferral): decided here, so that a
-- cancel that came after the worker last looked still counts. The run's progress,
-- if it reported one, is kept. Returns the channel and the status it ended in, for
-- the finished-task counters (only runs that did not succeed come here: few).
UPDATE tasks
SET status = CASE WHEN cancel_requested = 1 AND :status <> 'done' THEN 'cancelled'
                  ELSE :status END,
    retries = :retries, delay_until = :run_at, result = :result,
    error = :error, owner = NULL, recoveries = 0, alone = 0,
    finished_at = CASE WHEN cancel_requested = 1 AND :status <> 'done' THEN :ended_at
                       ELSE :finished_at END,
    progress = COALESCE(:progress, progress),
    history = CASE WHEN :outcome IS NULL THEN history ELSE json_insert(
        CASE WHEN history IS NULL OR NOT json_valid(history)
                  OR json_type(history) <> 'array' THEN '[]'
             WHEN json_array_length(history) >= 10 THEN json_remove(history, '$[0]')
             ELSE history END,
        '$[#]', json_object('attempt', COALESCE(attempts, 0), 'started_at', started_at,
                            'ended_at', :ended_at,
                            'outcome', CASE WHEN cancel_requested = 1 THEN 'cancelled'
                                            ELSE :outcome END,
                            'error', :note))
    END
WHERE id = :id AND owner = :owner AND status = 'running'
RETURNING channel, status;

-- name: record_done
-- The same for a run that succeeded (the common case): no history to add, and no
-- progress (a column more to write costs every row). Its values come by position,
-- (id, owner, retries, result, finished_at), which binds faster than by name: it is
-- run once for nearly every task.
UPDATE tasks
SET status = 'done', retries = ?3, delay_until = NULL, result = ?4, error = NULL,
    finished_at = ?5, owner = NULL, recoveries = 0, alone = 0
WHERE id = ?1 AND owner = ?2 AND status = 'running';

-- name: record_done_progress
-- A run that succeeded and reported progress: the values of record_done, then it.
UPDATE tasks
SET status = 'done', retries = ?3, delay_until = NULL, result = ?4, error = NULL,
    finished_at = ?5, owner = NULL, recoveries = 0, alone = 0, progress = ?6
WHERE id = ?1 AND owner = ?2 AND status = 'running';

-- name: release
-- A claimed task that was never started goes back as if it had not been claimed
-- (or ends cancelled, if its cancel was requested meanwhile). Returns its channel and
-- status, for the finished-task counters.
UPDATE tasks
SET status = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'pending' END,
    finished_at = CASE WHEN cancel_requested = 1 THEN :now END,
    error = CASE WHEN cancel_requested = 1 THEN 'cancelled before it ran' ELSE error END,
    owner = NULL, started_at = NULL,
    attempts = MAX(COALESCE(attempts, 1) - 1, 0)
WHERE id = :id AND owner = :owner AND status = 'running'
RETURNING channel, status;

-- name: next_due
SELECT MIN(COALESCE(delay_until, 0)) FROM tasks WHERE channel = :channel AND status = 'delayed';

-- name: has_unfinished
-- One look per status, so that each is served by that status's partial index and
-- stops at the first task found.
SELECT EXISTS (SELECT 1 FROM tasks WHERE channel = :channel AND status = 'pending')
    OR EXISTS (SELECT 1 FROM tasks WHERE channel = :channel AND status = 'delayed')
    OR EXISTS (SELECT 1 FROM tasks WHERE channel = :channel AND status = 'running');

-- name: runnable
-- Whether a claim of the channel could find a task now: a pending one, or a delayed
-- one come due (each look served by its status's partial index).
SELECT EXISTS (SELECT 1 FROM tasks WHERE channel = :channel AND status = 'pending')
    OR EXISTS (SELECT 1 FROM tasks WHERE channel = :channel AND status = 'delayed'
                                     AND COALESCE(delay_until, 0) <= :now);

-- name: change_token
PRAGMA data_version;

-- name: register_owner
INSERT INTO simplepyq_owners (owner, host, pid, pid_start, heartbeat_at, channels)
VALUES (:owner, :host, :pid, :pid_start, :now, :channels)
ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,
                                  channels = excluded.channels;

-- name: hold_for_beat
-- Read before a heartbeat is written, so that the time written is taken once the
-- lock is had (in SQLite the write lock is had already, at BEGIN IMMEDIATE).
SELECT heartbeat_at FROM simplepyq_owners WHERE owner = :owner;

-- name: owners
-- Every registered queue instance, with the channels it runs workers for (JSON).
SELECT owner, host, pid, pid_start, heartbeat_at, channels FROM simplepyq_owners;

-- name: unregister_owner
DELETE FROM simplepyq_owners WHERE owner = :owner;

-- name: running_owners
SELECT r.owner, o.host, o.pid, o.pid_start, o.heartbeat_at
FROM (SELECT DISTINCT owner FROM tasks WHERE status = 'running') AS r
LEFT JOIN simplepyq_owners AS o ON o.owner = r.owner;

-- name: owners_to_judge
-- What the housekeeper judges alive or dead: every registered instance, and the
-- owners of running tasks that none registered. A dead one's running tasks are
-- recovered and its registration removed, also when it was running nothing:
-- otherwise an instance killed while idle would be listed among the workers forever.
SELECT owner, host, pid, pid_start, heartbeat_at FROM simplepyq_owners
UNION ALL
SELECT r.owner, NULL, NULL, NULL, NULL
FROM (SELECT DISTINCT owner FROM tasks WHERE status = 'running') AS r
WHERE NOT EXISTS (SELECT 1 FROM simplepyq_owners AS o WHERE o.owner = r.owner);

-- name: judged_heartbeat
-- Read in the recovery's transaction (under the write lock): an owner is recovered
-- only if its heartbeat is still the one it was judged dead by.
SELECT heartbeat_at FROM simplepyq_owners WHERE owner = :owner;

-- name: hold_owner
-- Read in a claim's transaction (under the write lock), to renew a heartbeat that
-- is old, or an owner row that recovery deleted, before the claim commits.
SELECT heartbeat_at FROM simplepyq_owners WHERE owner = :owner;

-- name: recover
-- The running tasks of a dead owner go back to pending, each run added to its
-- history. A task's first recovery counts, and a later one only if the task ran
-- alone in its process (:alone, set by run_alone), so that tasks that were merely
-- claimed or running beside the culprit are not blamed; the recovery that makes
-- :max_recoveries counted in a row fails the task, taken to kill its workers. A task
-- whose cancel was requested ends cancelled instead.
UPDATE tasks
SET status = CASE WHEN cancel_requested = 1 THEN 'cancelled'
                  WHEN (COALESCE(recoveries, 0) = 0 OR alone = 1)
                       AND COALESCE(recoveries, 0) + 1 >= :max_recoveries
                  THEN 'failed' ELSE 'pending' END,
    finished_at = CASE WHEN cancel_requested = 1
                            OR ((COALESCE(recoveries, 0) = 0 OR alone = 1)
                                AND COALESCE(recoveries, 0) + 1 >= :max_recoveries)
                       THEN :now ELSE NULL END,
    error = CASE WHEN cancel_requested = 1 THEN 'cancelled; ' || :note
                 WHEN (COALESCE(recoveries, 0) = 0 OR alone = 1)
                      AND COALESCE(recoveries, 0) + 1 >= :max_recoveries
                 THEN 'failed for good: its worker died ' || (COALESCE(recoveries, 0) + 1)
                      || ' times in a row while running it (last: ' || :note || ')'
                 ELSE :note END,
    recoveries = COALESCE(recoveries, 0)
                 + CASE WHEN COALESCE(recoveries, 0) = 0 OR alone = 1 THEN 1 ELSE 0 END,
    alone = 0,
    owner = NULL,
    history = json_insert(
        CASE WHEN history IS NULL OR NOT json_valid(history)
                  OR json_type(history) <> 'array' THEN '[]'
             WHEN json_array_length(history) >= 10 THEN json_remove(history, '$[0]')
             ELSE history END,
        '$[#]', json_object('attempt', COALESCE(attempts, 0), 'started_at', started_at,
                            'ended_at', :now, 'outcome', 'recovered', 'error', :note))
WHERE status = 'running' AND owner IS :owner
RETURNING id, channel, status;

-- name: run_alone
-- A recovered task starts running alone in its process: if that process dies now,
-- the task is to blame (see recover).
UPDATE tasks SET alone = 1 WHERE id = :id AND owner = :owner AND status = 'running';

-- name: get
SELECT id, channel, args, status, retries, attempts, priority, result, error,
       created_at, delay_until, started_at, finished_at, recoveries, history,
       key, time_limit, cancel_requested, progress
FROM tasks WHERE id = :id;

-- name: list
SELECT id, channel, args, status, retries, attempts, priority, result, error,
       created_at, delay_until, started_at, finished_at, recoveries, history,
       key, time_limit, cancel_requested, progress
FROM tasks
WHERE (:channel IS NULL OR channel = :channel) AND (:status IS NULL OR status = :status)
ORDER BY id
LIMIT :limit;

-- name: stats
SELECT channel, status, COUNT(*) FROM tasks GROUP BY channel, status;

-- name: clear_failed
DELETE FROM tasks WHERE status = 'failed' AND (:channel IS NULL OR channel = :channel);

-- name: requeue_failed
-- A failed task with a key is requeued only if no unfinished task of its channel
-- holds the key, and only the newest of the failed tasks sharing it.
UPDATE tasks
SET status = 'pending', retries = COALESCE(:retries, retries), delay_until = NULL,
    finished_at = NULL, owner = NULL
WHERE status = 'failed' AND (:channel IS NULL OR channel = :channel)
  AND (key IS NULL OR (
      NOT EXISTS (SELECT 1 FROM tasks AS held
                  WHERE held.channel = tasks.channel AND held.key = tasks.key
                    AND held.status IN ('pending', 'delayed', 'running', 'blocked'))
      AND id = (SELECT MAX(id) FROM tasks AS failed
                WHERE failed.channel = tasks.channel AND failed.key = tasks.key
                  AND failed.status = 'failed')))
RETURNING id;

-- name: kept_failed
-- After requeue_failed: the failed tasks it left failed, because their key was held.
SELECT id, key FROM tasks
WHERE status = 'failed' AND key IS NOT NULL AND (:channel IS NULL OR channel = :channel)
ORDER BY id;

-- name: remove_channel_tasks
DELETE FROM tasks WHERE channel = :name;

-- name: remove_channel
DELETE FROM simplepyq_channels WHERE name = :name;

-- name: purge
DELETE FROM tasks
WHERE status IN ('done', 'failed', 'cancelled') AND COALESCE(finished_at, 0) < :before
  AND (:channel IS NULL OR channel = :channel);

-- name: pending_since
-- Per channel with pending tasks, when its longest-waiting one became due: the end
-- of its delay if it had one, else its enqueue time. NULL if some pending task has
-- neither (rows made by 0.1.3): then the longest wait is unknown, maybe very long.
SELECT channel, CASE WHEN COUNT(COALESCE(delay_until, created_at)) < COUNT(*) THEN NULL
                     ELSE MIN(COALESCE(delay_until, created_at)) END
FROM tasks
WHERE status = 'pending'
GROUP BY channel;

-- name: adopt
-- A key already held by an unfinished task of the target is dropped from the copy.
INSERT INTO tasks (id, channel, args, status, retries, attempts, priority, result, error,
                   created_at, delay_until, started_at, finished_at, recoveries, history,
                   key, time_limit)
VALUES ({next_id}, :channel, :args, :status, :retries, :attempts, :priority, :result, :error,
        :created_at, :delay_until, :started_at, :finished_at, COALESCE(:recoveries, 0),
        :history,
        CASE WHEN :status IN ('pending', 'delayed', 'running', 'blocked') AND EXISTS (
                 SELECT 1 FROM tasks WHERE channel = :channel AND key = :key
                   AND status IN ('pending', 'delayed', 'running', 'blocked'))
             THEN NULL ELSE :key END,
        :time_limit);

-- name: forget
DELETE FROM tasks WHERE id = :id AND status IS :status AND attempts IS :attempts;

-- name: reconcile
-- After a commit whose answer was lost, tasks running under :owner that it holds
-- nowhere (:held, a JSON array of ids) were claimed by that commit and never
-- started: they go back as if they had not been claimed, like a release.
UPDATE tasks
SET status = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'pending' END,
    finished_at = CASE WHEN cancel_requested = 1 THEN :now END,
    error = CASE WHEN cancel_requested = 1 THEN 'cancelled before it ran' ELSE error END,
    owner = NULL, started_at = NULL,
    attempts = MAX(COALESCE(attempts, 1) - 1, 0)
WHERE status = 'running' AND owner = :owner
  AND id NOT IN (SELECT value FROM json_each(:held))
RETURNING id, channel, status;

-- name: cancel
-- A task not started yet ends cancelled at once; a running one is asked to stop (its
-- owner looks for requests with cancel_requests). Returns the status it has now and
-- its channel (for the counters), or nothing if it was finished (or does not exist).
UPDATE tasks
SET status = CASE WHEN status = 'running' THEN status ELSE 'cancelled' END,
    finished_at = CASE WHEN status = 'running' THEN finished_at ELSE :now END,
    error = CASE WHEN status = 'running' THEN error ELSE 'cancelled before it ran' END,
    cancel_requested = 1
WHERE id = :id AND status IN ('pending', 'delayed', 'running', 'blocked')
RETURNING status, channel;

-- name: task_status
SELECT status FROM tasks WHERE id = :id;

-- name: cancel_requests
-- The running tasks of :owner whose cancel was requested. It walks the running tasks
-- (tasks_running, a few per worker): an index of its own would cost every change of
-- every task's status, to serve a look made a few times a second at most.
SELECT id FROM tasks WHERE owner = :owner AND cancel_requested = 1 AND status = 'running';

-- name: progress
UPDATE tasks SET progress = :progress
WHERE id = :id AND owner = :owner AND status = 'running';

-- name: note_starts
-- :count starts of a rate-limited channel, made at :now.
WITH RECURSIVE made (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM made WHERE n < :count)
INSERT INTO simplepyq_starts (channel, started_at) SELECT :channel, :now FROM made;

-- Workflows: dependencies between tasks -----------------------------------------

-- name: create_flows
-- A task of a workflow: which workflow (the id of its first task), and, for a task
-- stored blocked, how many of the tasks it waits for have not ended as it needs
-- (:needs: 'done'; 'finished', whatever the outcome; 'failed', failed or cancelled),
-- and what it receives as args once released (:input, NULL for its own args).
-- Tasks outside workflows have no row here, nor in simplepyq_deps: the feature costs
-- them one look at an index (see finished_upstreams).
CREATE TABLE IF NOT EXISTS simplepyq_flows (
    task_id INTEGER PRIMARY KEY,
    workflow INTEGER NOT NULL,
    waiting INTEGER NOT NULL DEFAULT 0,
    needs TEXT NOT NULL DEFAULT 'done',
    input TEXT,
    cancelled_by INTEGER
);
CREATE INDEX IF NOT EXISTS simplepyq_flows_workflow ON simplepyq_flows (workflow);
-- task_id waits for upstream_id (its position-th upstream); settled once the upstream
-- has ended and been counted, so that no end is counted twice.
CREATE TABLE IF NOT EXISTS simplepyq_deps (
    task_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    upstream_id INTEGER NOT NULL,
    needs TEXT NOT NULL,
    settled INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, position)
);
CREATE INDEX IF NOT EXISTS simplepyq_deps_upstream ON simplepyq_deps (upstream_id);
-- The edges whose upstream has not ended: what every end looks up (see
-- finished_upstreams), small however many workflows have run.
CREATE INDEX IF NOT EXISTS simplepyq_deps_unsettled ON simplepyq_deps (upstream_id)
    WHERE settled = 0;

-- name: create_schedules
-- Periodic tasks by name: what to enqueue (spec: JSON, see periodic.py; args:
-- msgpack), the next tick not yet enqueued (next_at), how many times it was fired (the
-- compare-and-set that makes one task per tick), and the last tick and its task.
-- simplepyq_ticks tells each periodic task the tick it is for.
CREATE TABLE IF NOT EXISTS simplepyq_schedules (
    name TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    spec TEXT NOT NULL,
    args BLOB,
    next_at REAL,
    fired INTEGER NOT NULL DEFAULT 0,
    last_tick REAL,
    last_task INTEGER
);
CREATE TABLE IF NOT EXISTS simplepyq_ticks (
    task_id INTEGER PRIMARY KEY,
    schedule TEXT NOT NULL,
    scheduled_at REAL NOT NULL
);

-- name: finished_upstreams
-- Of the tasks :ids (a JSON array), those that have ended and have dependents not
-- told yet: what every transaction that ends tasks asks, one index look per task.
SELECT DISTINCT t.id, t.status, t.error
FROM simplepyq_deps AS d JOIN tasks AS t ON t.id = d.upstream_id
WHERE d.upstream_id IN (SELECT value FROM json_each(:ids)) AND d.settled = 0
  AND t.status IN ('done', 'failed', 'cancelled');

-- name: any_unsettled
-- Whether any task waits for another at all: when none does (a store without
-- workflows in flight), ends need no further look.
SELECT 1 FROM simplepyq_deps WHERE settled = 0 LIMIT 1;

-- name: settle_edges
-- The dependents of a task that has ended, each told once.
UPDATE simplepyq_deps SET settled = 1
WHERE upstream_id = :id AND settled = 0
RETURNING task_id, needs;

-- name: one_less
-- :count more of a blocked task's upstreams ended as it needs: how many it still waits
-- for, and its input.
UPDATE simplepyq_flows SET waiting = waiting - :count
WHERE task_id = :id
RETURNING waiting, input;

-- name: release_blocked
-- A blocked task whose upstreams all ended as it needs becomes due (or delayed, until
-- the time it was enqueued for), with its input as args where it takes one.
UPDATE tasks
SET status = CASE WHEN COALESCE(delay_until, 0) > :now THEN 'delayed' ELSE 'pending' END,
    args = CASE WHEN :has_input THEN :args ELSE args END
WHERE id = :id AND status = 'blocked'
RETURNING channel;

-- name: cancel_blocked
-- A blocked task one of whose upstreams ended as it does not need: it never runs.
UPDATE tasks SET status = 'cancelled', finished_at = :now, error = :error
WHERE id = :id AND status = 'blocked'
RETURNING id, channel;

-- name: note_cancelled_by
UPDATE simplepyq_flows SET cancelled_by = :upstream WHERE task_id = :id;

-- name: inputs_of
-- What a released task receives: its upstreams in order, as they ended.
SELECT d.upstream_id, t.status, t.result, t.error
FROM simplepyq_deps AS d LEFT JOIN tasks AS t ON t.id = d.upstream_id
WHERE d.task_id = :id
ORDER BY d.position;

-- name: lock_upstreams
-- The tasks a new task is to wait for, as they are now (under the write lock).
SELECT t.id, t.status, f.workflow
FROM tasks AS t LEFT JOIN simplepyq_flows AS f ON f.task_id = t.id
WHERE t.id IN (SELECT value FROM json_each(:ids));

-- name: add_node
-- One task of a workflow (see add for the columns).
INSERT INTO tasks (id, channel, args, status, retries, delay_until, priority, attempts,
                   created_at, time_limit, key, finished_at, error)
VALUES ({next_id}, :channel, :args, :status, :retries, :run_at, :priority, 0, :now, :time_limit, :key,
        :finished_at, :error)
ON CONFLICT (channel, key)
    WHERE key IS NOT NULL AND status IN ('pending', 'delayed', 'running', 'blocked')
DO NOTHING
RETURNING id;

-- name: add_flow
INSERT INTO simplepyq_flows (task_id, workflow, waiting, needs, input)
VALUES (:id, :workflow, :waiting, :needs, :input);

-- name: add_edge
INSERT INTO simplepyq_deps (task_id, position, upstream_id, needs, settled)
VALUES (:id, :position, :upstream, :needs, :settled);

-- name: workflow_of
SELECT workflow FROM simplepyq_flows WHERE task_id = :id;

-- name: workflow_counts
SELECT t.status, COUNT(*)
FROM simplepyq_flows AS f JOIN tasks AS t ON t.id = f.task_id
WHERE f.workflow = :workflow
GROUP BY t.status;

-- name: workflow_tasks
SELECT f.task_id FROM simplepyq_flows AS f WHERE f.workflow = :workflow ORDER BY f.task_id;

-- name: upstreams_of
SELECT upstream_id FROM simplepyq_deps WHERE task_id = :id ORDER BY position;

-- name: dependents_of
SELECT DISTINCT task_id FROM simplepyq_deps WHERE upstream_id = :id ORDER BY task_id;

-- name: channel_upstreams
-- Before a channel's tasks are deleted: those of them that others still wait for.
SELECT DISTINCT d.upstream_id
FROM simplepyq_deps AS d JOIN tasks AS t ON t.id = d.upstream_id
WHERE t.channel = :name AND d.settled = 0;

-- name: forget_flows
-- Workflow rows of tasks that are gone (after a purge, a clear or a removed channel).
DELETE FROM simplepyq_flows WHERE task_id NOT IN (SELECT id FROM tasks);

-- name: forget_edges
DELETE FROM simplepyq_deps WHERE task_id NOT IN (SELECT id FROM tasks);

-- name: task_end
SELECT status, result, error FROM tasks WHERE id = :id;

-- name: restorable
-- Tasks cancelled because one of :ids failed (or was cancelled) that can wait again
-- now that it is requeued: no other task they need done has failed or been
-- cancelled, and no unfinished task holds their key.
SELECT f.task_id, f.cancelled_by
FROM simplepyq_flows AS f JOIN tasks AS t ON t.id = f.task_id
WHERE f.cancelled_by IN (SELECT value FROM json_each(:ids)) AND t.status = 'cancelled'
  AND NOT EXISTS (SELECT 1 FROM simplepyq_deps AS e JOIN tasks AS u ON u.id = e.upstream_id
                  WHERE e.task_id = f.task_id AND e.upstream_id <> f.cancelled_by
                    AND e.needs = 'done' AND u.status IN ('failed', 'cancelled'))
  AND (t.key IS NULL OR NOT EXISTS (
      SELECT 1 FROM tasks AS held
      WHERE held.channel = t.channel AND held.key = t.key
        AND held.status IN ('pending', 'delayed', 'running', 'blocked')))
ORDER BY f.task_id;

-- name: lock_upstreams_of
-- Before a restore: the tasks it would wait for (under the write lock, which BEGIN
-- IMMEDIATE took already; see postgres.sql).
SELECT upstream_id FROM simplepyq_deps WHERE task_id = :id;

-- name: restore
-- A task restored (see restorable) waits again for the task that had cancelled it;
-- unless a task it still waits for was deleted while it was cancelled (a delete
-- refuses only while a blocked task waits): it would wait forever, so it stays
-- cancelled.
UPDATE tasks SET status = 'blocked', error = NULL, finished_at = NULL
WHERE id = :id AND status = 'cancelled'
  AND NOT EXISTS (SELECT 1 FROM simplepyq_deps AS e
                  WHERE e.task_id = tasks.id AND e.settled = 0
                    AND NOT EXISTS (SELECT 1 FROM tasks AS u WHERE u.id = e.upstream_id));

-- name: unsettle
-- Its edges whose upstream is unfinished again (requeued) count again; its waiting
-- count never dropped for them, as they had ended as it did not need.
UPDATE simplepyq_deps SET settled = 0
WHERE task_id = :id AND settled = 1
  AND upstream_id IN (SELECT id FROM tasks
                      WHERE status IN ('pending', 'delayed', 'running', 'blocked'));

-- name: forget_cancelled_by
UPDATE simplepyq_flows SET cancelled_by = NULL WHERE task_id = :id;

-- name: rows_of
-- The rows of tasks as a transaction that recorded or claimed them leaves them (for
-- hooks).
SELECT id, channel, args, status, retries, attempts, priority, result, error,
       created_at, delay_until, started_at, finished_at, recoveries, history,
       key, time_limit, cancel_requested, progress
FROM tasks WHERE id IN (SELECT value FROM json_each(:ids));

-- Retention ------------------------------------------------------------------------

-- name: max_task_id
SELECT MAX(id) FROM tasks;

-- name: expired
-- The finished tasks with ids in [start, stop) past the age kept for their status (a
-- NULL time keeps them all): a bounded walk of the primary key, read without the
-- write lock; prune checks each again as it deletes.
SELECT id FROM tasks
WHERE id >= :start AND id < :stop
  AND ((status = 'done' AND COALESCE(finished_at, 0) < :done_before)
       OR (status IN ('failed', 'cancelled')
           AND COALESCE(finished_at, 0) < :failed_before))
ORDER BY id;

-- name: prune
-- Of the tasks :ids, those still finished past their age, but for one whose result a
-- blocked task will receive as its input; the ids deleted.
DELETE FROM tasks
WHERE id IN (SELECT value FROM json_each(:ids))
  AND ((status = 'done' AND COALESCE(finished_at, 0) < :done_before)
       OR (status IN ('failed', 'cancelled')
           AND COALESCE(finished_at, 0) < :failed_before))
  AND NOT EXISTS (SELECT 1 FROM simplepyq_deps AS d JOIN tasks AS w ON w.id = d.task_id
                  WHERE d.upstream_id = tasks.id AND w.status = 'blocked')
RETURNING id;

-- name: forget_flows_of
DELETE FROM simplepyq_flows WHERE task_id IN (SELECT value FROM json_each(:ids));

-- name: forget_edges_of
DELETE FROM simplepyq_deps WHERE task_id IN (SELECT value FROM json_each(:ids));

-- Periodic tasks -------------------------------------------------------------------

-- name: schedule_of
SELECT channel, spec, args, next_at, fired FROM simplepyq_schedules WHERE name = :name;

-- name: put_schedule
INSERT INTO simplepyq_schedules (name, channel, spec, args, next_at)
VALUES (:name, :channel, :spec, :args, :next_at)
ON CONFLICT (name) DO UPDATE SET channel = excluded.channel, spec = excluded.spec,
                                 args = excluded.args, next_at = excluded.next_at,
                                 fired = simplepyq_schedules.fired + 1;

-- name: remove_schedule
DELETE FROM simplepyq_schedules WHERE name = :name;

-- name: schedules
SELECT s.name, s.channel, s.spec, s.args, s.next_at, s.fired, s.last_tick, s.last_task,
       t.status
FROM simplepyq_schedules AS s LEFT JOIN tasks AS t ON t.id = s.last_task
ORDER BY s.name;

-- name: fire_schedule
-- The compare-and-set of a tick: only the transaction that finds the schedule as it
-- was read (fired unchanged) moves it on, and enqueues the tick's task.
UPDATE simplepyq_schedules
SET next_at = :next_at, fired = fired + 1,
    last_tick = COALESCE(:tick, last_tick)
WHERE name = :name AND fired = :fired
RETURNING name;

-- name: note_tick
INSERT INTO simplepyq_ticks (task_id, schedule, scheduled_at)
VALUES (:id, :name, :tick);

-- name: note_last_task
UPDATE simplepyq_schedules SET last_task = :id WHERE name = :name;

-- name: scheduled_at
SELECT scheduled_at FROM simplepyq_ticks WHERE task_id = :id;

-- name: forget_ticks_of
DELETE FROM simplepyq_ticks WHERE task_id IN (SELECT value FROM json_each(:ids));

-- name: forget_ticks
-- The ticks of periodic tasks that are gone (after a purge, a clear or a removed channel).
DELETE FROM simplepyq_ticks AS k WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE id = k.task_id);

-- Finished-task counters (see storage/finished.py) ---------------------------------

-- name: create_finished
-- How many tasks of each channel ended done, failed and cancelled in each minute
-- (Unix time // 60) and by each writer ('' here: SQLite has one writer at a time;
-- see postgres.sql), and a total row per channel (minute 0, writer ''), into which
-- fold_finished moves the old minutes. `removed` counts done tasks deleted (or made
-- to run again), in any row: a channel holds SUM(done) - SUM(removed) done tasks, a
-- sum over a few hundred small rows instead of a count of every finished task.
-- The other statuses are counted through their partial indexes (see counts), the
-- cancelled and blocked ones through one index of both statuses here. A claim or a
-- success writes no entry in it (SQLite writes a partial index entry only for a row
-- its WHERE holds for, before or after the change), but every insert and every
-- status change looks at each index that names the status, written or not: measured,
-- about 3k CPU instructions per task of a drain and 1k per one-call enqueue, for this
-- one (two, one per status, cost more). So one index, not two.
CREATE TABLE IF NOT EXISTS simplepyq_finished (
    minute INTEGER NOT NULL,
    channel TEXT NOT NULL,
    writer TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    removed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, channel, writer)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_cancelled_blocked ON tasks (channel, status)
    WHERE status IN ('cancelled', 'blocked');

-- name: create_removed_trigger
-- Kept by every delete of a done task, whoever runs it (a purge, retention, a copy's
-- forget, a 0.1.3 process). A task made done by a 0.1.3 process has no finished_at,
-- and is counted neither when it ends nor here. (Its upsert, like the rest of the
-- schema, needs SQLite 3.24 or later in every process that opens the file.)
CREATE TRIGGER IF NOT EXISTS simplepyq_done_removed AFTER DELETE ON tasks
WHEN OLD.status = 'done' AND OLD.finished_at IS NOT NULL
BEGIN
    INSERT INTO simplepyq_finished (minute, channel, writer, removed)
    VALUES (0, OLD.channel, '', 1)
    ON CONFLICT (minute, channel, writer) DO UPDATE SET removed = removed + 1;
END;

-- name: seed_finished
-- On the upgrade that creates the counters: they start from the finished tasks the
-- store holds (done ones with a finished_at, as the trigger above counts them), once:
-- not again once any count is written.
INSERT INTO simplepyq_finished (minute, channel, writer, done, failed, cancelled)
SELECT 0, channel, '', SUM(status = 'done' AND finished_at IS NOT NULL),
       SUM(status = 'failed'), SUM(status = 'cancelled')
FROM tasks
WHERE status IN ('done', 'failed', 'cancelled')
  AND NOT EXISTS (SELECT 1 FROM simplepyq_finished)
GROUP BY channel;

-- name: count_finished
-- What one transaction that ended tasks of a channel adds to its minute: one upsert
-- per channel and transaction, however many tasks (see storage/finished.py). Its
-- values come by position (minute, channel, done, failed, cancelled, removed): it
-- runs in nearly every commit of a worker.
INSERT INTO simplepyq_finished (minute, channel, writer, done, failed, cancelled, removed)
VALUES (?1, ?2, '', ?3, ?4, ?5, ?6)
ON CONFLICT (minute, channel, writer) DO UPDATE
SET done = done + excluded.done, failed = failed + excluded.failed,
    cancelled = cancelled + excluded.cancelled, removed = removed + excluded.removed;

-- name: channels_of
-- The channels of tasks :ids (a JSON array), and how many of them each has: for
-- outcomes recorded without their channel (the scheduler always gives it).
SELECT channel, COUNT(*) FROM tasks
WHERE id IN (SELECT value FROM json_each(:ids))
GROUP BY channel;

-- name: counts
-- Tasks per channel and status without reading finished tasks: each unfinished
-- status, and failed and cancelled, through its partial index; done from the
-- counters (a channel whose done tasks are all gone, as stats does not list it). One
-- statement: one snapshot.
SELECT channel, 'pending', COUNT(*) FROM tasks WHERE status = 'pending' GROUP BY channel
UNION ALL
SELECT channel, 'delayed', COUNT(*) FROM tasks WHERE status = 'delayed' GROUP BY channel
UNION ALL
SELECT channel, 'running', COUNT(*) FROM tasks WHERE status = 'running' GROUP BY channel
UNION ALL
SELECT channel, 'failed', COUNT(*) FROM tasks WHERE status = 'failed' GROUP BY channel
UNION ALL
SELECT channel, status, COUNT(*) FROM tasks WHERE status IN ('cancelled', 'blocked')
GROUP BY channel, status
UNION ALL
SELECT channel, 'done', SUM(done) - SUM(removed) FROM simplepyq_finished GROUP BY channel
HAVING SUM(done) - SUM(removed) <> 0;

-- name: finished
-- Tasks ended per channel and minute, from minute :since on, oldest first; minutes
-- in which a channel only had tasks removed are left out.
SELECT channel, minute, SUM(done), SUM(failed), SUM(cancelled)
FROM simplepyq_finished
WHERE minute >= :since AND minute > 0
GROUP BY minute, channel
HAVING SUM(done) + SUM(failed) + SUM(cancelled) > 0
ORDER BY minute, channel;

-- name: finished_totals
-- Tasks ended per channel since the counters were created: deletes do not lower them.
SELECT channel, SUM(done), SUM(failed), SUM(cancelled)
FROM simplepyq_finished
GROUP BY channel
ORDER BY channel;

-- name: fold_finished
-- Housekeeping: the minutes before :before move into their channel's total row, in
-- one transaction with forget_folded (under the write lock: nothing counts twice).
INSERT INTO simplepyq_finished (minute, channel, writer, done, failed, cancelled, removed)
SELECT 0, channel, '', SUM(done), SUM(failed), SUM(cancelled), SUM(removed)
FROM simplepyq_finished
WHERE minute > 0 AND minute < :before
GROUP BY channel
ON CONFLICT (minute, channel, writer) DO UPDATE
SET done = done + excluded.done, failed = failed + excluded.failed,
    cancelled = cancelled + excluded.cancelled, removed = removed + excluded.removed;

-- name: forget_folded
DELETE FROM simplepyq_finished WHERE minute > 0 AND minute < :before;


-- Browsing, and acting on one task (see storage/browse.py) --------------------------

-- name: recent_tasks
-- A page of tasks, newest first: those with ids below :before that pass {filters},
-- the recent_* filters below that the caller asked for, each a plain equality, so
-- that the planner can read a key's tasks through tasks_keyed and a channel's tasks
-- of one status through that status's partial index (tasks_failed, tasks_cancelled
-- and tasks_blocked list them in id order: no sort). Keyset paging: the next page
-- starts below the last id of this one, so a page costs the same at any depth (no
-- OFFSET to walk, no count), and tasks added meanwhile do not shift it.
SELECT id, channel, args, status, retries, attempts, priority, result, error,
       created_at, delay_until, started_at, finished_at, recoveries, history,
       key, time_limit, cancel_requested, progress
FROM tasks
WHERE id < :before {filters}
ORDER BY id DESC
LIMIT :limit;

-- name: recent_channel
AND channel = :channel

-- name: recent_status
AND status = :status

-- name: recent_status_by_id
-- The status filter where walking ids down finds the page sooner (see crowded): the
-- unary plus keeps SQLite off the status's index.
AND +status = :status

-- name: recent_status_indexed
-- The status filter without a channel, where the status is not crowded: naming its
-- channels lets SQLite read the status's partial index (channel first), a channel at
-- a time, and sort the few tasks found, instead of walking every id down past the
-- finished tasks to find them (a million: 70 ms a page).
AND status = :status
AND channel IN (SELECT DISTINCT channel FROM tasks WHERE status = :status)

-- name: recent_key
AND key = :key

-- name: crowded
-- Whether a page of a channel's tasks of one status is better found by walking ids
-- down (recent_status_by_id) than through the status's partial index. tasks_claim
-- and tasks_due are not in id order, so a page read through them sorts every task
-- they hold for the channel (a backlog of a million pending tasks: half a second a
-- page); when they hold :probe or more below :before (read through the index,
-- :probe entries at most), ids walked down meet them often enough. The others are
-- in id order, or small (tasks_running). SQLite keeps no statistics to choose by.
SELECT COUNT(*) >= :probe FROM (
    SELECT 1 FROM tasks
    WHERE :status IN ('pending', 'delayed') AND channel = :channel AND status = :status
      AND id < :before
    LIMIT :probe);

-- name: crowded_anywhere
-- The same choice for a status in any channel, where the other way is
-- recent_status_indexed, which sorts every task of the status: walk ids down where
-- the status's index holds :probe tasks or more (read through it, :probe entries at
-- most), and for done tasks, which have no index (and are most of a table).
SELECT CASE WHEN :status = 'done' THEN 1 ELSE COUNT(*) >= :probe END FROM (
    SELECT 1 FROM tasks WHERE :status <> 'done' AND status = :status LIMIT :probe);

-- name: requeue
-- One failed or cancelled task becomes pending again (with :retries if not NULL), as
-- requeue_failed makes them: a keyed task only if no unfinished task of its channel
-- holds its key, decided here. A task of a workflow only if every task it waits for
-- ended as it needs and it received its input (it was released and then failed, or
-- was cancelled): one cancelled because of an upstream comes back when that
-- upstream is requeued (see restore), and one cancelled while it still waited stays
-- cancelled. Its cancel request is forgotten, or its next run would be cancelled.
-- Returns its channel.
UPDATE tasks
SET status = 'pending', retries = COALESCE(:retries, retries), delay_until = NULL,
    finished_at = NULL, owner = NULL, cancel_requested = 0
WHERE id = :id AND status IN ('failed', 'cancelled')
  AND (key IS NULL OR NOT EXISTS (
      SELECT 1 FROM tasks AS held
      WHERE held.channel = tasks.channel AND held.key = tasks.key
        AND held.status IN ('pending', 'delayed', 'running', 'blocked')))
  AND NOT EXISTS (SELECT 1 FROM simplepyq_flows AS f
                  WHERE f.task_id = tasks.id
                    AND (f.waiting > 0 OR (f.input IS NOT NULL AND tasks.args IS NULL)))
RETURNING channel;

-- name: lock_task
-- First in a delete: the task's status as it is now (under the write lock, which
-- BEGIN IMMEDIATE took already; see postgres.sql).
SELECT status FROM tasks WHERE id = :id;

-- name: delete_task
-- A task that is not running, unless a blocked task waits for it (for its end, or
-- for its result as input): that task would wait forever, or run without its
-- input. Its rows in the side tables are deleted next (forget_*_of).
DELETE FROM tasks
WHERE id = :id AND status <> 'running'
  AND NOT EXISTS (SELECT 1 FROM simplepyq_deps AS d JOIN tasks AS w ON w.id = d.task_id
                  WHERE d.upstream_id = tasks.id AND w.status = 'blocked')
RETURNING id;

-- name: run_now
-- A delayed task becomes pending, its time brought forward to :now (as make_due does
-- for a channel); its channel, to wake the workers.
UPDATE tasks SET status = 'pending', delay_until = :now
WHERE id = :id AND status = 'delayed'
RETURNING channel;

-- name: running_by_owner
-- How many tasks each queue instance runs: a walk of tasks_running, which holds only
-- the running tasks (a few per worker).
SELECT owner, COUNT(*) FROM tasks WHERE status = 'running' GROUP BY owner;

-- name: recent_workflows
-- A page of workflows, newest first (a workflow's id is that of its first task),
-- each with its tasks' counts by status, in one statement: the page's ids are read
-- down the workflow index from below :before (keyset paging, as recent_tasks), then
-- their tasks are counted. A workflow row whose task is gone (a copy's forget deletes
-- tasks alone) keeps its workflow on the page, with nothing counted for it.
WITH page AS (
    SELECT DISTINCT workflow FROM simplepyq_flows
    WHERE workflow < :before
    ORDER BY workflow DESC
    LIMIT :limit)
SELECT p.workflow, t.status, COUNT(t.id)
FROM page AS p
JOIN simplepyq_flows AS f ON f.workflow = p.workflow
LEFT JOIN tasks AS t ON t.id = f.task_id
GROUP BY p.workflow, t.status
ORDER BY p.workflow DESC;
