"""The reconcile schedule (migration 0012): one row, shared by every worker of
every instance, saying who runs reconcile this RECONCILE_INTERVAL and since
when the ledger's holds have been reconciled."""


class ReconcileScheduleSQL:
    def claim_reconcile_run(self, interval_seconds, tx=None):
        """This interval's run of reconcile, or None when a worker has it
        already: {started, seconds_since_reconciled}, the time since the last
        run that worked began (None before the first)."""
        with self._alone(tx) as cursor:
            return cursor.one(
                """
                INSERT INTO reconcile_schedule AS schedule (next_run_at)
                VALUES (now() + make_interval(secs => %(interval)s))
                ON CONFLICT (only_row) DO UPDATE
                   SET next_run_at = EXCLUDED.next_run_at
                 WHERE schedule.next_run_at <= now()
                RETURNING now() AS started,
                          extract(epoch FROM now() - schedule.reconciled_until)::float8 AS seconds_since_reconciled
                """,
                {"interval": interval_seconds},
            )

    def mark_reconciled(self, started, tx=None):
        """Every hold that came due before `started` has been returned."""
        with self._alone(tx) as cursor:
            cursor.run(
                """
                UPDATE reconcile_schedule
                   SET reconciled_until = greatest(reconciled_until, %(started)s)
                """,
                {"started": started},
            )
