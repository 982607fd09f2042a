-- 0020: a webhook's deliveries by index: its newest delivery (the webhook's
-- state, read with every listing), its page of the delivery log, and the
-- cascade that deletes them with the webhook, which without it read the
-- whole outbox.
CREATE INDEX alert_deliveries_webhook_idx ON alert_deliveries (webhook_id, created_at DESC, id);
