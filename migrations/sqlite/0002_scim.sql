-- SCIM server (issue #5): client names, token bookkeeping, the stored SCIM document of
-- each provisioned user, membership state, group → role mappings, and resource counts
-- kept by triggers so `totalResults` of an unfiltered list never scans.

ALTER TABLE scim_clients ADD COLUMN name TEXT;

ALTER TABLE scim_tokens ADD COLUMN created_at TEXT;

-- The SCIM representation as last written by the IdP (without id/meta/externalId, which
-- live in their own columns and tables); mapped attributes are overlaid on output.
ALTER TABLE scim_users ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
-- `active: false` disables the membership (sign-in into the org is refused).
ALTER TABLE scim_users ADD COLUMN active BOOLEAN NOT NULL DEFAULT 1;
ALTER TABLE scim_users ADD COLUMN display_name TEXT;
-- The client that provisioned the user (NULL once that client is deleted).
ALTER TABLE scim_users ADD COLUMN client_id BLOB REFERENCES scim_clients (client_id) ON DELETE SET NULL;
CREATE INDEX scim_users_org_display_name_idx ON scim_users (org_id, lower(display_name));
CREATE INDEX scim_users_client_id_idx ON scim_users (client_id);

-- Group → org role, per client: members of a group named `group_display_name`
-- (case-insensitive) hold `role_id` in the client's org.
CREATE TABLE scim_group_roles (
    client_id          BLOB NOT NULL REFERENCES scim_clients (client_id) ON DELETE CASCADE,
    group_display_name TEXT NOT NULL,
    role_id            BLOB NOT NULL REFERENCES roles (role_id) ON DELETE CASCADE,
    PRIMARY KEY (client_id, group_display_name)
);
CREATE INDEX scim_group_roles_role_id_idx ON scim_group_roles (role_id);

CREATE TABLE scim_resource_counts (
    org_id        BLOB    NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    resource_type TEXT    NOT NULL CHECK (resource_type IN ('User', 'Group')),
    total         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, resource_type)
);

CREATE TRIGGER scim_users_count_insert AFTER INSERT ON scim_users BEGIN
    INSERT INTO scim_resource_counts (org_id, resource_type, total) VALUES (NEW.org_id, 'User', 1)
    ON CONFLICT (org_id, resource_type) DO UPDATE SET total = total + 1;
END;
CREATE TRIGGER scim_users_count_delete AFTER DELETE ON scim_users BEGIN
    UPDATE scim_resource_counts SET total = total - 1
    WHERE org_id = OLD.org_id AND resource_type = 'User';
END;
CREATE TRIGGER scim_groups_count_insert AFTER INSERT ON scim_groups BEGIN
    INSERT INTO scim_resource_counts (org_id, resource_type, total) VALUES (NEW.org_id, 'Group', 1)
    ON CONFLICT (org_id, resource_type) DO UPDATE SET total = total + 1;
END;
CREATE TRIGGER scim_groups_count_delete AFTER DELETE ON scim_groups BEGIN
    UPDATE scim_resource_counts SET total = total - 1
    WHERE org_id = OLD.org_id AND resource_type = 'Group';
END;

-- externalId has no uniqueness in RFC 7643 §3.1 (clients such as Microsoft's test suite
-- reuse one value): the lookup index stays, without the constraint.
DROP INDEX scim_external_ids_external_id_key;
CREATE INDEX scim_external_ids_external_id_idx ON scim_external_ids (client_id, resource_type, external_id);
