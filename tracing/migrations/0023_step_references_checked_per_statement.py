"""A step's trace and agent are checked once per statement, not once per step (issue 19).

As foreign-key constraints, each inserted step cost PostgreSQL a lookup and a row lock of its trace and of its agent
at commit: 112,509 steps of 5,000 Who&When runs, 0.9 s of the server's 3.6 s of an import (bench/scale.py). The
constraints are replaced by triggers that keep the same guarantees:

- inserting steps: after the statement, the distinct traces and agents its rows name are locked (``FOR KEY SHARE``,
  the lock a foreign-key check takes, so a concurrent delete waits and then fails) and must all exist;
- changing a step's trace or agent (rare: an OTLP build re-attributing a span): the same check, for that row;
- deleting traces or agents: after the statement, no step may still name one of them (Django's cascade deletes a
  trace's steps, and empties ``agent`` on those of a deleted agent, before deleting the rows they point at).

PostgreSQL only; the embedded SQLite mode keeps no constraint on these two columns.
"""

import django.db.models.deletion
from django.db import migrations, models

from ._postgresql import on_postgresql

# The traces, then the agents, that the inserted steps name: locked as a foreign-key check locks them, and all there.
NAMED_BY_NEW_STEPS = """
        SELECT count(DISTINCT TARGET_id) INTO wanted FROM new_steps;
        SELECT count(*) INTO found FROM (
            SELECT 1 FROM tracing_TARGET WHERE id IN (SELECT TARGET_id FROM new_steps) ORDER BY id FOR KEY SHARE
        ) AS locked;
        IF found < wanted THEN
            RAISE EXCEPTION 'a step names A_TARGET that does not exist' USING ERRCODE = 'foreign_key_violation';
        END IF;
"""
FORWARD = [
    """
    CREATE FUNCTION tracing_step_references_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        wanted integer;
        found integer;
    BEGIN"""
    + "".join(
        NAMED_BY_NEW_STEPS.replace("A_TARGET", named).replace("TARGET", target)
        for target, named in (("trace", "a trace"), ("agent", "an agent"))
    )
    + """
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER tracing_step_references_inserted AFTER INSERT ON tracing_step
    REFERENCING NEW TABLE AS new_steps FOR EACH STATEMENT EXECUTE FUNCTION tracing_step_references_inserted()
    """,
    """
    CREATE FUNCTION tracing_step_references_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.trace_id IS DISTINCT FROM OLD.trace_id THEN
            PERFORM 1 FROM tracing_trace WHERE id = NEW.trace_id FOR KEY SHARE;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'a step names a trace that does not exist' USING ERRCODE = 'foreign_key_violation';
            END IF;
        END IF;
        IF NEW.agent_id IS NOT NULL AND NEW.agent_id IS DISTINCT FROM OLD.agent_id THEN
            PERFORM 1 FROM tracing_agent WHERE id = NEW.agent_id FOR KEY SHARE;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'a step names an agent that does not exist' USING ERRCODE = 'foreign_key_violation';
            END IF;
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER tracing_step_references_changed AFTER UPDATE OF trace_id, agent_id ON tracing_step
    FOR EACH ROW WHEN (
        NEW.trace_id IS DISTINCT FROM OLD.trace_id
        OR (NEW.agent_id IS NOT NULL AND NEW.agent_id IS DISTINCT FROM OLD.agent_id)
    ) EXECUTE FUNCTION tracing_step_references_changed()
    """,
]
# Deleting a trace, or an agent, that a step still names. One function and trigger per referenced table.
STEPS_GONE = """
    CREATE FUNCTION tracing_TARGET_steps_gone() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM old_rows o WHERE EXISTS (SELECT 1 FROM tracing_step s WHERE s.TARGET_id = o.id)) THEN
            RAISE EXCEPTION 'a deleted TARGET still has steps' USING ERRCODE = 'foreign_key_violation';
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER tracing_TARGET_steps_gone AFTER DELETE ON tracing_TARGET
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION tracing_TARGET_steps_gone()
"""
TARGETS = ("trace", "agent")
FORWARD += [STEPS_GONE.replace("TARGET", target) for target in TARGETS]
BACKWARD = [
    f"DROP TRIGGER IF EXISTS {trigger} ON {table}; DROP FUNCTION IF EXISTS {trigger}()"
    for trigger, table in [
        *[(f"tracing_{target}_steps_gone", f"tracing_{target}") for target in reversed(TARGETS)],
        ("tracing_step_references_changed", "tracing_step"),
        ("tracing_step_references_inserted", "tracing_step"),
    ]
]


class Migration(migrations.Migration):
    dependencies = [
        ("tracing", "0022_lz4_compression"),
    ]

    operations = [
        migrations.AlterField(
            model_name="step",
            name="agent",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="steps",
                to="tracing.agent",
            ),
        ),
        migrations.AlterField(
            model_name="step",
            name="trace",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="steps",
                to="tracing.trace",
            ),
        ),
        migrations.RunPython(on_postgresql(FORWARD), on_postgresql(BACKWARD)),
    ]
