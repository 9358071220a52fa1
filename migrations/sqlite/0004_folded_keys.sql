-- Case-insensitive uniqueness by a key folded in Rust (Unicode lower case), not by SQL
-- lower(), which is ASCII-only on SQLite and Unicode on PostgreSQL: "Émile" and "émile"
-- now collide on both. Rows from before this migration are keyed with lower() here.

ALTER TABLE users ADD COLUMN username_key TEXT;
UPDATE users SET username_key = lower(username) WHERE username IS NOT NULL;
DROP INDEX users_username_key;
CREATE UNIQUE INDEX users_username_key ON users (username_key);

ALTER TABLE roles ADD COLUMN name_key TEXT NOT NULL DEFAULT '';
UPDATE roles SET name_key = lower(name);
DROP INDEX roles_org_name_key;
CREATE UNIQUE INDEX roles_org_name_key ON roles (org_id, name_key);

ALTER TABLE permissions ADD COLUMN name_key TEXT NOT NULL DEFAULT '';
UPDATE permissions SET name_key = lower(name);
DROP INDEX permissions_org_name_key;
CREATE UNIQUE INDEX permissions_org_name_key ON permissions (ifnull(org_id, x''), name_key);

ALTER TABLE scim_users ADD COLUMN user_name_key TEXT NOT NULL DEFAULT '';
UPDATE scim_users SET user_name_key = lower(user_name);
DROP INDEX scim_users_user_name_key;
CREATE UNIQUE INDEX scim_users_user_name_key ON scim_users (org_id, user_name_key);
