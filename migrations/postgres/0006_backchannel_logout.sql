-- OpenID Connect Back-Channel Logout 1.0: logout tokens owed to relying parties, delivered
-- with retries by every node's worker (src/oidc/backchannel.rs). One row per client and
-- ended browser session (`sid`). No foreign keys: a notice outlives its user, session and
-- client (the worker abandons it when the client is gone).
CREATE TABLE oidc_logout_notices (
    notice_id          uuid        NOT NULL PRIMARY KEY,
    client_id          text        NOT NULL,
    user_id            uuid        NOT NULL,
    browser_session_id uuid        NOT NULL,
    -- The database's clock (set by the trigger below); informational.
    created_at         timestamptz NOT NULL,
    -- Attempts claimed so far (a claim counts even if its node dies before sending).
    attempts           integer     NOT NULL DEFAULT 0,
    -- When the next attempt is due; the epoch for a notice never tried (due at once, on any
    -- node's clock); while a node sends, the end of its lease.
    next_attempt_at    timestamptz NOT NULL,
    delivered_at       timestamptz,
    abandoned_at       timestamptz,
    last_error         text
);
CREATE UNIQUE INDEX oidc_logout_notices_client_session_key
    ON oidc_logout_notices (client_id, browser_session_id);
CREATE INDEX oidc_logout_notices_pending_idx ON oidc_logout_notices (next_attempt_at)
    WHERE delivered_at IS NULL AND abandoned_at IS NULL;
-- Purging finished notices (housekeeping).
CREATE INDEX oidc_logout_notices_delivered_at_idx ON oidc_logout_notices (delivered_at)
    WHERE delivered_at IS NOT NULL;
CREATE INDEX oidc_logout_notices_abandoned_at_idx ON oidc_logout_notices (abandoned_at)
    WHERE abandoned_at IS NOT NULL;

-- A browser session ends whenever `revoked` goes from false to true, whatever the path
-- (logout, admin or account revocation, password set/reset/change, lock/disable, SCIM
-- `active: false`, org-wide revocation, impersonation end): each enabled client with a
-- `backchannel_logout_uri` that holds a grant made from it is owed a logout token
-- (Back-Channel Logout 1.0 §2.5). Enqueued in the revoking transaction.
CREATE FUNCTION oidc_enqueue_logout_notices() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO oidc_logout_notices
        (notice_id, client_id, user_id, browser_session_id, created_at, attempts, next_attempt_at)
    SELECT gen_random_uuid(), c.client_id, NEW.user_id, NEW.session_id, now(), 0,
           '1970-01-01 00:00:00+00'
    FROM oidc_clients c
    WHERE c.enabled AND c.backchannel_logout_uri IS NOT NULL
      AND c.client_id IN (SELECT g.client_id FROM oidc_grants g
                          WHERE g.browser_session_id = NEW.session_id)
    ON CONFLICT (client_id, browser_session_id) DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER sessions_logout_notices AFTER UPDATE OF revoked ON sessions
    FOR EACH ROW WHEN (NOT OLD.revoked AND NEW.revoked)
    EXECUTE FUNCTION oidc_enqueue_logout_notices();

-- Deleting a user or an org deletes their sessions (and the grants that name the clients)
-- by cascade, in an order no trigger on `sessions` can rely on. So their live sessions are
-- revoked first, while every grant still exists, which enqueues the notices above.
CREATE FUNCTION revoke_sessions_before_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        UPDATE sessions SET revoked = true WHERE user_id = OLD.user_id AND NOT revoked;
    ELSE
        UPDATE sessions SET revoked = true WHERE org_id = OLD.org_id AND NOT revoked;
    END IF;
    RETURN OLD;
END;
$$;
CREATE TRIGGER users_revoke_sessions BEFORE DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION revoke_sessions_before_delete();
CREATE TRIGGER organizations_revoke_sessions BEFORE DELETE ON organizations
    FOR EACH ROW EXECUTE FUNCTION revoke_sessions_before_delete();
