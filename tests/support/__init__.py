"""Helpers the test layers share; conftest files only define fixtures, built from these.

- `servers`: throwaway PostgreSQL and Redis, databases, migrations, settings and process env;
- `processes`: real processes with their output kept (`Running`), what survived (`processes_of`);
- `rows`: waiting for a row (failures name the job, its last status and the log tail), counts;
- `transitions`: lifecycle events applied one at a time, as the queue reports them;
- `readme`: the README's commands, run as written;
- `executions`: a task's runs counted inside the task; `app`: the app with the test tasks;
- `cluster`: a whole system per chaos scenario; `browser`: a browser tab on the running app.
"""

from tests.support.processes import Running, StartWorker, processes_of
from tests.support.rows import (
    WaitForRow,
    count_rows,
    describe_row,
    eventually,
    read_rows,
    wait_for_row,
)
from tests.support.servers import (
    APP,
    ROOT,
    VENV_BIN,
    LocalPostgres,
    LocalRedis,
    Servers,
    app_env,
    create_database,
    drop_database,
    free_port,
    make_settings,
    migrate,
    psql,
    start_servers,
)

__all__ = [
    "APP",
    "ROOT",
    "VENV_BIN",
    "LocalPostgres",
    "LocalRedis",
    "Running",
    "Servers",
    "StartWorker",
    "WaitForRow",
    "app_env",
    "count_rows",
    "create_database",
    "describe_row",
    "drop_database",
    "eventually",
    "free_port",
    "make_settings",
    "migrate",
    "processes_of",
    "psql",
    "read_rows",
    "start_servers",
    "wait_for_row",
]
