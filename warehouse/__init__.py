"""The Snowflake connection and its embedded stand-in, DDL, load/merge, curated models, identity graph."""
