-- A stamp per SCIM resource that changes whenever anything a User's representation is built
-- from changes outside its own row of this table (the users columns that mappings read, the
-- scim_users row, a client's externalId, group membership and group names). With `version`
-- it keys each node's cache of rendered Users (src/scim/rendered.rs). A new row starts at a
-- random stamp, so a user provisioned again (same id, version 1) never matches an old entry.
ALTER TABLE scim_resource_meta ADD COLUMN stamp INTEGER NOT NULL DEFAULT 0;
-- A list reads each row's version and stamp from the index alone.
CREATE INDEX scim_resource_meta_stamp_idx ON scim_resource_meta (resource_type, resource_id, version, stamp);

CREATE TRIGGER scim_resource_meta_stamp_new AFTER INSERT ON scim_resource_meta BEGIN
    UPDATE scim_resource_meta SET stamp = random() & 4611686018427387903 WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER users_scim_stamp AFTER UPDATE OF email, username, first_name, last_name, picture_url, properties ON users
    WHEN OLD.email IS NOT NEW.email OR OLD.username IS NOT NEW.username OR OLD.first_name IS NOT NEW.first_name
      OR OLD.last_name IS NOT NEW.last_name OR OLD.picture_url IS NOT NEW.picture_url OR OLD.properties IS NOT NEW.properties
BEGIN
    UPDATE scim_resource_meta SET stamp = stamp + 1 WHERE resource_type = 'User' AND resource_id = NEW.user_id;
END;
CREATE TRIGGER scim_users_stamp AFTER UPDATE ON scim_users BEGIN
    UPDATE scim_resource_meta SET stamp = stamp + 1 WHERE resource_type = 'User' AND resource_id = NEW.user_id;
END;
CREATE TRIGGER scim_external_ids_stamp_insert AFTER INSERT ON scim_external_ids BEGIN
    UPDATE scim_resource_meta SET stamp = stamp + 1 WHERE resource_type = NEW.resource_type AND resource_id = NEW.resource_id;
END;
CREATE TRIGGER scim_external_ids_stamp_update AFTER UPDATE ON scim_external_ids BEGIN
    UPDATE scim_resource_meta SET stamp = stamp + 1 WHERE resource_type = NEW.resource_type AND resource_id = NEW.resource_id;
END;
CREATE TRIGGER scim_external_ids_stamp_delete AFTER DELETE ON scim_external_ids BEGIN
    UPDATE scim_resource_meta SET stamp = stamp + 1 WHERE resource_type = OLD.resource_type AND resource_id = OLD.resource_id;
END;
CREATE TRIGGER scim_group_members_stamp_insert AFTER INSERT ON scim_group_members BEGIN
    UPDATE scim_resource_meta SET stamp = stamp + 1 WHERE resource_type = 'User' AND resource_id = NEW.user_id;
END;
CREATE TRIGGER scim_group_members_stamp_delete AFTER DELETE ON scim_group_members BEGIN
    UPDATE scim_resource_meta SET stamp = stamp + 1 WHERE resource_type = 'User' AND resource_id = OLD.user_id;
END;
CREATE TRIGGER scim_groups_stamp_rename AFTER UPDATE OF display_name ON scim_groups
    WHEN OLD.display_name IS NOT NEW.display_name BEGIN
    UPDATE scim_resource_meta SET stamp = stamp + 1
    WHERE resource_type = 'User' AND resource_id IN (SELECT user_id FROM scim_group_members WHERE group_id = NEW.group_id);
END;
