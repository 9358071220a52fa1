-- A change counter per org and resource type, bumped by every insert and delete, so a node
-- can keep the ids at every N-th position of an org's id order (page anchors for a deep
-- `startIndex`, src/scim/anchors.rs) and know they still hold while the counter is unchanged.
ALTER TABLE scim_resource_counts ADD COLUMN changes INTEGER NOT NULL DEFAULT 0;

DROP TRIGGER scim_users_count_insert;
DROP TRIGGER scim_users_count_delete;
DROP TRIGGER scim_groups_count_insert;
DROP TRIGGER scim_groups_count_delete;
CREATE TRIGGER scim_users_count_insert AFTER INSERT ON scim_users BEGIN
    INSERT INTO scim_resource_counts (org_id, resource_type, total, changes) VALUES (NEW.org_id, 'User', 1, 1)
    ON CONFLICT (org_id, resource_type) DO UPDATE SET total = total + 1, changes = changes + 1;
END;
CREATE TRIGGER scim_users_count_delete AFTER DELETE ON scim_users BEGIN
    UPDATE scim_resource_counts SET total = total - 1, changes = changes + 1
    WHERE org_id = OLD.org_id AND resource_type = 'User';
END;
CREATE TRIGGER scim_groups_count_insert AFTER INSERT ON scim_groups BEGIN
    INSERT INTO scim_resource_counts (org_id, resource_type, total, changes) VALUES (NEW.org_id, 'Group', 1, 1)
    ON CONFLICT (org_id, resource_type) DO UPDATE SET total = total + 1, changes = changes + 1;
END;
CREATE TRIGGER scim_groups_count_delete AFTER DELETE ON scim_groups BEGIN
    UPDATE scim_resource_counts SET total = total - 1, changes = changes + 1
    WHERE org_id = OLD.org_id AND resource_type = 'Group';
END;
