"""The audit log's trigger lets the retention job, and nothing else, delete old entries.

Until now the trigger refused every UPDATE and DELETE. Now a DELETE passes only in a transaction
that named a cutoff with ``set_config('wedsync.audit_retention_cutoff', <timestamp>, true)`` (the
retention purge in wedsync/services/retention.py does, for one batch's transaction), only for
entries older than that cutoff, and only when the cutoff is at least 29 days ago, whatever a
session claims (WEDSYNC_AUDIT_RETENTION_DAYS is 30 at least; a day of slack for clocks). UPDATE is
refused as before. Reversing puts back the trigger that refuses everything.
"""

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

_RETENTION_MAY_DELETE = """
CREATE OR REPLACE FUNCTION wedsync_audit_log_append_only() RETURNS trigger AS $$
DECLARE
    cutoff timestamptz := nullif(current_setting('wedsync.audit_retention_cutoff', true), '')::timestamptz;
BEGIN
    IF TG_OP = 'DELETE' AND cutoff IS NOT NULL AND cutoff <= now() - interval '29 days' AND OLD.at < cutoff THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""

_REFUSE_ALL = """
CREATE OR REPLACE FUNCTION wedsync_audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""


def _retention_may_delete(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_RETENTION_MAY_DELETE, params=None)


def _refuse_all(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_REFUSE_ALL, params=None)


class Migration(migrations.Migration):
    dependencies = [("wedsync", "0002_audit_log_append_only_trigger")]

    operations = [migrations.RunPython(_retention_may_delete, _refuse_all)]
