-- A change counter per org and resource type, bumped by every insert and delete, so a node
-- can keep the ids at every N-th position of an org's id order (page anchors for a deep
-- `startIndex`, src/scim/anchors.rs) and know they still hold while the counter is unchanged.
ALTER TABLE scim_resource_counts ADD COLUMN changes bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION scim_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text := CASE TG_TABLE_NAME WHEN 'scim_users' THEN 'User' ELSE 'Group' END;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO scim_resource_counts (org_id, resource_type, total, changes) VALUES (NEW.org_id, kind, 1, 1)
        ON CONFLICT (org_id, resource_type) DO UPDATE
            SET total = scim_resource_counts.total + 1, changes = scim_resource_counts.changes + 1;
        RETURN NEW;
    END IF;
    UPDATE scim_resource_counts SET total = total - 1, changes = changes + 1
    WHERE org_id = OLD.org_id AND resource_type = kind;
    RETURN OLD;
END;
$$;
