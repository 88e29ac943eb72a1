-- Customer identity (issue 13): which external_userid a WeChat unionid is in a corp, or the pending_id WeCom
-- handed out while the person was not a customer yet. One row per (corp, unionid): a conversion is never asked
-- for again while its row is valid (WeCom's quota, 100k conversions an hour per corp, is shared with other
-- providers).
CREATE TABLE customer_identities (
    corp_id         TEXT        NOT NULL,
    unionid         TEXT        NOT NULL,
    -- The openid the conversion was asked with (none when the unionid came from externalcontact/get).
    openid          TEXT,
    -- Set when WeCom answered it, or when a pending id was resolved to it.
    external_userid TEXT,
    -- The temporary id WeCom answered for a person who was not a customer; kept after it is resolved, so a
    -- backend can join the earlier WeChat session to the new customer.
    pending_id      TEXT,
    -- convert | contact_detail | pending_resolved
    source          TEXT        NOT NULL,
    checked_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Asked again only after this (a pending id lives 90 days at WeCom).
    expires_at      TIMESTAMPTZ NOT NULL,
    resolved_at     TIMESTAMPTZ,
    PRIMARY KEY (corp_id, unionid)
);
CREATE UNIQUE INDEX customer_identities_pending ON customer_identities (corp_id, pending_id)
    WHERE pending_id IS NOT NULL;
CREATE INDEX customer_identities_external ON customer_identities (corp_id, external_userid)
    WHERE external_userid IS NOT NULL;
-- Pending ids still waiting for their customer: the add-event hook looks here first, so a corp without any
-- queues nothing.
CREATE INDEX customer_identities_open ON customer_identities (corp_id, expires_at)
    WHERE pending_id IS NOT NULL AND external_userid IS NULL;

-- Customers added while the corp had open pending ids: the resolve_pending_ids job asks WeCom for their
-- pending ids, at most 100 a call, and deletes them once answered.
CREATE TABLE customer_identity_checks (
    corp_id         TEXT        NOT NULL,
    app             TEXT        NOT NULL,
    external_userid TEXT        NOT NULL,
    event_id        BIGINT      REFERENCES wecom_events (id) ON DELETE SET NULL,
    queued_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (corp_id, app, external_userid)
);
