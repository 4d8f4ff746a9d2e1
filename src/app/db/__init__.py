"""The `background_jobs` table and the connections that read and write it."""
