-- A refresh-token rotation is one statement: recording the rotated token moves its session to
-- the successor in the same statement (src/store/oidc.rs `rotate_refresh`), so the rotation
-- needs no explicit transaction (RFC 9700 §4.14.2: rotation with reuse detection).
CREATE TRIGGER oidc_rotated_refresh_tokens_rotate AFTER INSERT ON oidc_rotated_refresh_tokens
BEGIN
    UPDATE sessions SET refresh_token = NEW.successor_hash
    WHERE session_id = NEW.session_id AND refresh_token = NEW.token_hash;
END;
