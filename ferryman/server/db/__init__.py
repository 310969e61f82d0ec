"""Configuration database: models, engine/session factory, migrations."""
