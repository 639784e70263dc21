"""Auth: access and refresh tokens with revocation, and password hashing."""
