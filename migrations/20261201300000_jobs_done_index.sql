-- Done jobs are deleted once older than the retention (api.jobs_retention_days): this index lets each small
-- pruning batch find its rows without scanning the queue.
CREATE INDEX wecom_jobs_done ON wecom_jobs (updated_at) WHERE status = 'done';
