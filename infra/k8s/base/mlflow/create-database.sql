-- MLflow's own role and database in the platform's PostgreSQL, created once and kept in
-- step with the loopline-mlflow Secret's password on every run (the mlflow-database Job).
-- Run with: psql -v ON_ERROR_STOP=1 -v password="$MLFLOW_PASSWORD" -f create-database.sql
SELECT 'CREATE ROLE mlflow LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlflow')
\gexec
ALTER ROLE mlflow WITH LOGIN PASSWORD :'password';
SELECT 'CREATE DATABASE mlflow OWNER mlflow' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow')
\gexec
