-- A stamp per SCIM resource that changes whenever anything a User's representation is built
-- from changes outside its own row of this table (the users columns that mappings read, the
-- scim_users row, a client's externalId, group membership and group names). With `version`
-- it keys each node's cache of rendered Users (src/scim/rendered.rs). A new row starts at a
-- random stamp, so a user provisioned again (same id, version 1) never matches an old entry.
ALTER TABLE scim_resource_meta ADD COLUMN stamp bigint NOT NULL
    DEFAULT floor(random() * 4611686018427387904)::bigint;
-- A list reads each row's version and stamp from the index alone.
CREATE INDEX scim_resource_meta_stamp_idx ON scim_resource_meta (resource_type, resource_id) INCLUDE (version, stamp);

CREATE OR REPLACE FUNCTION scim_bump_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    IF TG_TABLE_NAME = 'scim_groups' THEN
        UPDATE scim_resource_meta SET stamp = stamp + 1
        WHERE resource_type = 'User'
          AND resource_id IN (SELECT user_id FROM scim_group_members WHERE group_id = r.group_id);
    ELSIF TG_TABLE_NAME = 'scim_external_ids' THEN
        UPDATE scim_resource_meta SET stamp = stamp + 1
        WHERE resource_type = r.resource_type AND resource_id = r.resource_id;
    ELSE
        UPDATE scim_resource_meta SET stamp = stamp + 1
        WHERE resource_type = 'User' AND resource_id = r.user_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_scim_stamp AFTER UPDATE OF email, username, first_name, last_name, picture_url, properties
    ON users FOR EACH ROW
    WHEN ((OLD.email, OLD.username, OLD.first_name, OLD.last_name, OLD.picture_url, OLD.properties)
          IS DISTINCT FROM (NEW.email, NEW.username, NEW.first_name, NEW.last_name, NEW.picture_url, NEW.properties))
    EXECUTE FUNCTION scim_bump_stamp();
CREATE TRIGGER scim_users_stamp AFTER UPDATE ON scim_users FOR EACH ROW EXECUTE FUNCTION scim_bump_stamp();
CREATE TRIGGER scim_external_ids_stamp AFTER INSERT OR UPDATE OR DELETE ON scim_external_ids
    FOR EACH ROW EXECUTE FUNCTION scim_bump_stamp();
CREATE TRIGGER scim_group_members_stamp AFTER INSERT OR DELETE ON scim_group_members
    FOR EACH ROW EXECUTE FUNCTION scim_bump_stamp();
CREATE TRIGGER scim_groups_stamp_rename AFTER UPDATE OF display_name ON scim_groups
    FOR EACH ROW WHEN (OLD.display_name IS DISTINCT FROM NEW.display_name)
    EXECUTE FUNCTION scim_bump_stamp();
