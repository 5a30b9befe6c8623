"""On PostgreSQL, points and summaries check their run once per statement, not once per row.

A foreign key checks every inserted row on its own (a query of the run's table per row,
at commit): 40% of the database's time for an ingested batch, more than the points' own
COPY into the table and its indexes. The same guarantees are kept by triggers that check
each statement's rows together:

- rows added or changed must name an existing run; the run is locked FOR KEY SHARE, as the
  foreign key's check does, so it cannot be deleted before the rows commit;
- a run cannot be deleted while points or summaries of it remain (checked at commit, like
  the deferred foreign key): deleting a run deletes its rows first (``on_delete=CASCADE``).

Either violation is a foreign_key_violation, an ``IntegrityError`` to Django. SQLite keeps
its foreign keys (checked in process, they cost little): only the migration state changes
there.
"""

from django.db import migrations, models

# The tables are named in the SQL below; the functions serve both.
TABLES = ("metrics_metricpoint", "metrics_metricsummary")

ROWS_HAVE_THEIR_RUN = """
CREATE OR REPLACE FUNCTION metrics_rows_have_their_run() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wanted bigint;
BEGIN
    FOR wanted IN SELECT DISTINCT run_id FROM written LOOP
        PERFORM 1 FROM runs_run WHERE id = wanted FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'insert or update on table "%" violates its reference to runs_run', TG_TABLE_NAME
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Key (run_id)=(%s) is not present in table "runs_run".', wanted);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$
"""

RUN_HAS_NO_ROWS = """
CREATE OR REPLACE FUNCTION metrics_run_has_no_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM metrics_metricpoint WHERE run_id = OLD.id)
       OR EXISTS (SELECT 1 FROM metrics_metricsummary WHERE run_id = OLD.id) THEN
        RAISE EXCEPTION 'delete on table "runs_run" violates the reference of its metrics to it'
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (id)=(%s) is still referenced by metric rows.', OLD.id);
    END IF;
    RETURN NULL;
END
$$
"""


def _foreign_keys(cursor, table: str) -> list[str]:
    cursor.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f' "
        "AND confrelid = 'runs_run'::regclass",
        [table],
    )
    return [name for (name,) in cursor.fetchall()]


def checks_per_statement(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for table in TABLES:
            for name in _foreign_keys(cursor, table):
                cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        cursor.execute(ROWS_HAVE_THEIR_RUN)
        cursor.execute(RUN_HAS_NO_ROWS)
        for table in TABLES:
            for event in ("insert", "update"):
                cursor.execute(
                    f"CREATE TRIGGER {table}_run_{event} AFTER {event.upper()} ON {table} "
                    "REFERENCING NEW TABLE AS written FOR EACH STATEMENT "
                    "EXECUTE FUNCTION metrics_rows_have_their_run()"
                )
        cursor.execute(
            "CREATE CONSTRAINT TRIGGER metrics_run_deleted AFTER DELETE ON runs_run "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION metrics_run_has_no_rows()"
        )


def foreign_keys_again(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS metrics_run_deleted ON runs_run")
        for table in TABLES:
            for event in ("insert", "update"):
                cursor.execute(f"DROP TRIGGER IF EXISTS {table}_run_{event} ON {table}")
            cursor.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT {table}_run_id_fk_runs_run_id FOREIGN KEY (run_id) "
                "REFERENCES runs_run (id) DEFERRABLE INITIALLY DEFERRED"
            )
        cursor.execute("DROP FUNCTION IF EXISTS metrics_rows_have_their_run()")
        cursor.execute("DROP FUNCTION IF EXISTS metrics_run_has_no_rows()")


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0005_run_indexes_in_the_unique_ones"),
        ("runs", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="metricpoint",
                    name="run",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        related_name="points",
                        to="runs.run",
                    ),
                ),
                migrations.AlterField(
                    model_name="metricsummary",
                    name="run",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        related_name="metric_summaries",
                        to="runs.run",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(checks_per_statement, foreign_keys_again)],
        ),
    ]
