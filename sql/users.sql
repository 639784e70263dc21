-- name: create_user(email, password_hash)^
-- Insert a user unless the email is taken; returns nothing when it is.
INSERT INTO users (email, password_hash)
VALUES (:email, :password_hash)
ON CONFLICT (email) DO NOTHING
RETURNING id, email, created_at;

-- name: get_user_by_email(email)^
-- The user with this email, with the password hash for login.
SELECT id, email, password_hash, created_at
FROM users
WHERE email = :email;

-- name: delete_user(user_id)!
-- Erase a user for good: chats, messages, memories and their history go with it (ON DELETE CASCADE),
-- and so do the user's stored revocations; tokens naming the user are refused from now on anyway.
WITH forgotten_revocations AS (
    DELETE FROM revoked_tokens WHERE user_id = :user_id
)
DELETE FROM users
WHERE id = :user_id;

-- name: get_user(user_id)^
-- The public profile of one user, with their settings.
SELECT id, email, created_at, memory_extraction
FROM users
WHERE id = :user_id;

-- name: update_settings(user_id, memory_extraction)^
-- Change the user's settings (NULL: leave as it is); the profile after the change.
UPDATE users
SET memory_extraction = coalesce(:memory_extraction, memory_extraction)
WHERE id = :user_id
RETURNING id, email, created_at, memory_extraction;

-- name: upgrade_password_hash(user_id, old_hash, new_hash)!
-- Replace a hash made with older parameters, unless the password changed meanwhile.
UPDATE users
SET password_hash = :new_hash
WHERE id = :user_id AND password_hash = :old_hash;
