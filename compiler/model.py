"""The compiler's own model of every Sleipnir document kind; the published JSON Schemas are built from it.

Each kind is a `Kind` whose body is a `Record` of `Key`s (`compiler/shapes.py`). A key has a name, a shape (its
type, range, enum or pattern) and one short markdown text, which becomes both the plain `description` (backticks
dropped) and the `markdownDescription` (with a link to the key's section of the spec). `schemas.build` turns a
kind into a draft-07 document.
"""

# Over 600 lines on purpose: this is a table, every key of every document kind with its shape and its one
# description, kept in one place so the schemas, the spec links and the checks read the same words.

from __future__ import annotations

from .ir.common import DURATION_PATTERN, MONITORED
from .shapes import (
    DOCS_BASE,
    DRAFT_07,
    ENV_PATTERN,
    NAME_PATTERN,
    SCHEMA_BASE,
    SEMVER_PATTERN,
    TIME_PATTERN,
    URL_PATH_PATTERN,
    Anything,
    Body,
    Boolean,
    ByKey,
    Choice,
    Definitions,
    Integer,
    Key,
    Kind,
    ListOf,
    MapOf,
    Number,
    Place,
    Text,
    either,
    record,
    walk,
)

__all__ = [
    "DOCS_BASE",
    "DRAFT_07",
    "JOB",
    "KINDS",
    "MONITORED",
    "SCHEMA_BASE",
    "Body",
    "Definitions",
    "Key",
    "Kind",
    "Place",
    "record",
    "walk",
]


# --- Shared shapes ---------------------------------------------------------------------------------------------

NAME = Text(pattern=NAME_PATTERN, expected="a name: a letter or `_`, then letters, digits, `_`, `.` or `-`")
SEMVER = Text(pattern=SEMVER_PATTERN, expected="a semantic version such as 1.0.0")
TIME_OF_DAY = Text(pattern=TIME_PATTERN, expected="a time of day as HH:MM")
ENV_NAME = Text(pattern=ENV_PATTERN, expected="an environment variable name such as OPENAI_API_KEY")
DURATION = either(
    ("a duration such as 90s, 15m, 6h or 1d", Text(pattern=DURATION_PATTERN, expected="a duration such as 6h or 1h30m")),
    ("a number of seconds", Number(minimum=0)),
)
TEMPERATURE = Number(minimum=0, maximum=2)
TOP_P = Number(minimum=0, maximum=1)
POSITIVE = Integer(minimum=1)
COUNT = Integer(minimum=0)
SECONDS = Number(exclusive_minimum=0)
VALUE_TYPE = Choice("string|integer|number|boolean|list|object")
FREE = MapOf(Anything(), keys=NAME)
FIELD_NAMES = ListOf(Text())
PHASE_NAMES = ("map", "reduce", "fan_out", "process", "fan_in")


def _metadata(what: str, *, named: bool = True, versioned: bool = False, described: bool = False) -> tuple[Key, ...]:
    """`name`, `version` and `description`, each required or not as the kind says."""
    optional = "" if versioned else " Optional."
    return (
        Key("name", NAME, f"The {what}'s name, unique per version; other documents refer to it.", required=named),
        Key("version", SEMVER, f"The {what}'s semantic version, such as `1.0.0`.{optional}", required=versioned),
        Key("description", Text(), f"What the {what} is for, in a sentence or two.", required=described),
    )


def _params(what: str) -> Key:
    return Key(
        "params",
        FREE,
        f"Values for `${{NAME}}` substitutions in this {what}: a mapping of name to a scalar, list or mapping. "
        "`--param NAME=VALUE` overrides them.",
    )


def _model_keys() -> tuple[Key, ...]:
    return (
        Key("temperature", TEMPERATURE, "Sampling temperature, from `0` (deterministic) to `2`."),
        Key("max_tokens", POSITIVE, "The most tokens the model may generate for one call."),
    )


def _failure_policy(what: str) -> Key:
    return Key(
        f"on_{what.replace(' ', '_')}",
        record(
            Key(
                "strategy",
                Choice("retry|skip|fail|alert"),
                "What to do: `retry`, `skip` the item, `fail` the run, or `alert` and go on.",
                default="fail",
            ),
            Key("max_retries", COUNT, "Retries after the first attempt (with `strategy: retry`).", default=3),
            Key(
                "backoff",
                Choice("exponential|linear|fixed"),
                "How the wait between retries grows.",
                default="exponential",
            ),
            Key("initial_delay", SECONDS, "Seconds to wait before the first retry.", default=1),
            Key("max_delay", SECONDS, "The longest wait between retries, in seconds.", default=60),
            Key("factor", Number(minimum=1), "The multiplier of `exponential` backoff.", default=2),
            Key(
                "jitter",
                Boolean(),
                "Randomise each wait a little, so retries do not arrive together.",
                default=True,
            ),
            Key("log", Boolean(), "Log each failure.", default=True),
            Key("alert", Boolean(), "Also call the alert hook.", default=False),
        ),
        f"What to do when {'an' if what[0] in 'aeiou' else 'a'} {what} happens.",
    )


SCHEDULE = record(
    Key("cron", Text(examples=("0 9 * * *", "@daily")), "When to run: five cron fields or a macro such as `@daily`."),
    Key(
        "timezone",
        Text(examples=("UTC",)),
        "The IANA time zone the cron times are in, such as `Europe/Oslo`.",
        default="UTC",
    ),
    Key("enabled", Boolean(), "Set to `false` to keep the schedule but not run it.", default=True),
    Key(
        "catchup",
        Choice("none|latest|all"),
        "Which missed runs to make up after downtime: `none`, the `latest`, or `all`.",
    ),
    Key("catchup_window", DURATION, "How far back missed runs are made up: a duration such as `6h`, or seconds."),
    Key("overlap", Choice("skip|queue|allow"), "What to do when a run is due while the previous one is still going."),
)

PROMPT_CALL = record(
    Key("name", NAME, "The prompt module to run, by name.", required=True),
    Key("version", SEMVER, "The prompt module's version; the newest when absent."),
    Key("purpose", Text(), "Why this prompt is here, for readers and for `plan`."),
    Key("model", Text(examples=("gpt-4", "gpt-3.5-turbo")), "The model to call, overriding the module's default."),
    Key("provider", Text(), "The provider to call, by its name in the workspace's `providers`."),
    *_model_keys(),
    Key("top_p", TOP_P, "Nucleus sampling: the probability mass to sample from, `0` to `1`."),
    Key("api_key", Text(), "The API key, usually a substitution such as `${OPENAI_API_KEY}`."),
    Key("endpoint", Text(), "The model endpoint URL, overriding the provider's."),
    Key("timeout", SECONDS, "Seconds to wait for one call before it fails."),
    Key("parameters", FREE, "Values for the prompt module's `parameters` (its tunable switches)."),
    Key(
        "inputs",
        MapOf(Text(), keys=NAME),
        "Binds a module variable to a Jinja template over the item, such as `\"{{ input.body }}\"`.",
    ),
)

STEP = record(
    Key("id", NAME, "The step's id; a later step's `when` refers to its output by this id.", required=True),
    Key("prompt", NAME, "The prompt module this step runs, by name.", required=True),
    Key("version", SEMVER, "The prompt module's version; the newest when absent."),
    Key(
        "when",
        Text(),
        "A condition on earlier steps, such as `sentiment.confidence < 0.6`; the step runs only when it holds.",
    ),
    Key("model", Text(), "The model to call, overriding the module's default."),
    *_model_keys(),
    Key("parameters", FREE, "Values for the prompt module's `parameters`."),
    Key(
        "inputs",
        MapOf(Text(), keys=NAME),
        "Binds a module variable to a Jinja template over the item, such as `\"{{ input.body }}\"`.",
    ),
)

JOB = record(
    *_metadata("job"),
    _params("job"),
    Key(
        "input",
        record(
            Key(
                "source",
                Choice("database|postgresql|sqlite|file|api"),
                "Where the items come from; `file` when a `path` is given.",
            ),
            Key(
                "connection",
                Text(),
                "A connection name from the workspace's `connections`, or a database URL; the workspace database "
                "when absent.",
            ),
            Key(
                "query",
                Text(),
                "The SQL query that selects the items (with `source: database`, `postgresql` or `sqlite`).",
            ),
            Key("path", Text(), "The file to read (with `source: file`)."),
            Key("format", Choice("json|jsonl|csv"), "The file format."),
            Key("endpoint", Text(), "The URL to fetch items from (with `source: api`)."),
            Key(
                "auth",
                either(
                    ("an auth scheme name, such as bearer_token", Text(examples=("bearer_token",))),
                    (
                        "an auth mapping",
                        record(
                            Key("type", Choice("bearer|basic|header"), "The auth scheme."),
                            Key("token", Text(), "The token, usually a substitution such as `${API_TOKEN}`."),
                            Key("username", Text(), "The user name (with `type: basic`)."),
                            Key("password", Text(), "The password (with `type: basic`), usually a substitution."),
                            Key("header", Text(), "The header that carries the token (with `type: header`)."),
                        ),
                    ),
                ),
                "How to authenticate to the API: a scheme name such as `bearer_token`, or a mapping.",
            ),
            Key("batch_size", POSITIVE, "How many items are read and sent on together.", default=100),
            Key(
                "batch_strategy",
                Choice("parallel|sequential"),
                "Whether batches may overlap, or each finishes before the next starts.",
                default="sequential",
            ),
            Key(
                "key",
                Text(),
                "The field that identifies an item; results carry it, so they join back to their input.",
            ),
            Key("keep", FIELD_NAMES, "Input fields copied unchanged into each result."),
            Key("parameters", FREE, "Values bound into the query's `:name` placeholders."),
        ),
        "Where the job's items come from.",
    ),
    Key(
        "prompts",
        ListOf(PROMPT_CALL),
        "The prompt modules to run on each item, in order; each sees the earlier ones' output.",
    ),
    Key("stack", NAME, "A prompting stack to run on each item instead of `prompts`, by name."),
    Key("stack_version", SEMVER, "The stack's version; the newest when absent."),
    Key(
        "phases",
        ListOf(
            record(
                Key(
                    "name",
                    Text(pattern=NAME_PATTERN, expected="a phase name", examples=PHASE_NAMES),
                    "The phase: `map`, `reduce`, `fan_out`, `process`, `fan_in`, or a name of your own.",
                    required=True,
                ),
                Key("prompt", NAME, "The prompt module this phase runs, by name."),
                Key("version", SEMVER, "The prompt module's version; the newest when absent."),
                Key(
                    "parallel",
                    Boolean(),
                    "Whether the phase's calls run concurrently; `true` for `map` and `process` when absent.",
                ),
                Key("split_by", Text(), "The field whose values split the items into groups (for `fan_out`)."),
                Key("model", Text(), "The model to call, overriding the module's default."),
                *_model_keys(),
            )
        ),
        "Map-reduce or fan-out/fan-in phases, run in order.",
    ),
    Key(
        "output",
        record(
            Key("destination", Choice("database|postgresql|sqlite|file|api|stdout"), "Where the results go."),
            Key(
                "connection",
                Text(),
                "A connection name from the workspace's `connections`, or a database URL; the workspace database "
                "when absent.",
            ),
            Key("table", Text(), "The table the results are written to (with a database destination)."),
            Key("path", Text(), "The file the results are written to (with `destination: file`)."),
            Key("format", Choice("json|jsonl|csv"), "The file format."),
            Key("endpoint", Text(), "The URL the results are sent to (with `destination: api`)."),
            Key("method", Choice("POST|PUT|PATCH"), "The HTTP method used to send results.", default="POST"),
            Key(
                "on_complete",
                Text(examples=("notify", "none")),
                "What to do when the run completes: `notify`, `none`, or an action name.",
                default="none",
            ),
            Key(
                "mode",
                Choice("append|replace|upsert"),
                "How a rerun meets earlier results: `append` rows, `replace` them all, or `upsert` by item key.",
            ),
            Key(
                "dead_letter",
                Text(),
                "A file that receives the items an error strategy skipped, with their errors.",
            ),
        ),
        "Where and how the job's results are written.",
    ),
    Key(
        "execution",
        record(
            Key("concurrency", POSITIVE, "How many items are in flight at once (per worker on the `dask` engine).", default=10),
            Key(
                "engine",
                Choice("local|dask"),
                "Where the items run: `local` (one process, the default) or `dask` (partitions of the input on a "
                "Dask cluster; `pip install 'sleipnir[dask]'`).",
            ),
            Key(
                "retry_on_failure",
                COUNT,
                "How many times a failed call is retried: shorthand for `on_prompt_failure` retries.",
                default=0,
            ),
            Key("timeout", SECONDS, "Seconds the whole run may take."),
            Key(
                "max_error_rate",
                Number(minimum=0, maximum=1),
                "The largest share of items that may fail or be skipped (0 to 1) before the run fails; "
                "none by default, though a run in which no item succeeded always fails.",
            ),
            Key(
                "call_timeout",
                SECONDS,
                "Seconds one model call may take, unless the prompt entry sets `timeout`.",
                default=60,
            ),
            Key(
                "rate_limit",
                record(
                    Key("requests_per_minute", POSITIVE, "The most requests sent in a minute."),
                    Key("tokens_per_minute", POSITIVE, "The most tokens sent in a minute."),
                ),
                "Limits on how fast the job calls its provider.",
            ),
        ),
        "How the job runs: concurrency, retries, timeouts and rate limits.",
    ),
    Key(
        "error_handling",
        record(_failure_policy("prompt failure"), _failure_policy("input error"), _failure_policy("output error")),
        "What to do when a prompt, the input or the output fails.",
    ),
    Key(
        "profiles",
        MapOf(MapOf(Anything()), keys=NAME),
        "Named overlays chosen with `--profile`: each maps a shorthand (`model`, `temperature`, `max_tokens`, "
        "`batch_size`) or a dotted path to its value.",
    ),
    Key("schedule", SCHEDULE, "When the job runs on its own."),
    Key(
        "triggers",
        ListOf(
            record(
                Key("type", Choice("file_created|webhook"), "What starts the job.", required=True),
                Key("path", Text(), "The glob of files to watch (with `type: file_created`)."),
                Key(
                    "requests_per_minute",
                    POSITIVE,
                    "Requests a minute the webhook takes (with `type: webhook`); past it, 429 with `Retry-After`.",
                    default=60,
                ),
                Key(
                    "endpoint",
                    Text(pattern=URL_PATH_PATTERN, expected="a URL path starting with /"),
                    "The URL path that starts the job (with `type: webhook`).",
                ),
                Key("secret_env", ENV_NAME, "The environment variable holding the webhook's shared secret."),
            )
        ),
        "Events that start the job.",
    ),
    Key(
        "conditions",
        ListOf(
            record(
                Key("type", Choice("data_available|time_window"), "The kind of condition.", required=True),
                Key("check", Text(), "A SQL query returning a count (with `type: data_available`)."),
                Key("threshold", COUNT, "The count the `check` must reach."),
                Key("connection", Text(), "The database connection the `check` runs on."),
                Key("start", TIME_OF_DAY, "The start of the window, as `HH:MM`."),
                Key("end", TIME_OF_DAY, "The end of the window, as `HH:MM`."),
                Key("timezone", Text(), "The IANA time zone of the window."),
            )
        ),
        "Conditions that must all hold for a scheduled or triggered run to go ahead.",
    ),
    Key(
        "monitoring",
        record(
            Key(
                "metrics",
                ListOf(Choice("|".join(MONITORED))),
                "The metrics recorded for each run; all of them when absent.",
            ),
            Key(
                "export_to",
                Choice("prometheus|textfile|pushgateway|none"),
                "Where metrics are exported.",
                default="none",
            ),
            Key("pushgateway_url", Text(), "The Prometheus Pushgateway URL (with `export_to: pushgateway`)."),
        ),
        "Which metrics the job collects and where they go.",
    ),
    Key(
        "logging",
        record(
            Key(
                "level",
                Choice("DEBUG|INFO|WARNING|ERROR|CRITICAL"),
                "The least severe level logged.",
                default="INFO",
            ),
            Key("format", Choice("json|text"), "One JSON object a line, or plain text.", default="text"),
            Key("destination", Choice("file|stdout|stderr"), "Where log lines go.", default="stderr"),
            Key("path", Text(), "The log file (with `destination: file`)."),
            Key("rotate", Choice("daily|size|none"), "When the log file is rotated.", default="none"),
            Key(
                "max_bytes",
                POSITIVE,
                "The size at which the log is rotated (with `rotate: size`).",
                default=10485760,
            ),
            Key("retention", POSITIVE, "How many rotated log files are kept.", default=7),
        ),
        "How the job logs.",
    ),
    Key(
        "alerts",
        ListOf(
            record(
                Key(
                    "condition",
                    Text(),
                    "When to alert, over the job's metrics: `error_rate > 0.05`.",
                    required=True,
                ),
                Key("action", Choice("email|slack|webhook"), "How to alert.", required=True),
                Key("recipients", ListOf(Text()), "Email addresses (with `action: email`)."),
                Key("channel", Text(), "The Slack channel, such as `#ops` (with `action: slack`)."),
                Key("url", Text(), "The URL to post to (with `action: webhook`, or a Slack webhook)."),
                Key(
                    "cooldown",
                    DURATION,
                    "The least time between two alerts of this rule: a duration or seconds.",
                    default="15m",
                ),
            )
        ),
        "Alert rules over the job's metrics.",
    ),
)

TEMPLATE = record(
    *_metadata("template"),
    Key(
        "parameters",
        ListOf(
            record(
                Key("name", NAME, "The parameter's name, used as `${name}` in the job body.", required=True),
                Key("type", VALUE_TYPE, "The parameter's type.", default="string"),
                Key(
                    "required",
                    Boolean(),
                    "Whether a job must set it; a required parameter has no default.",
                    default=False,
                ),
                Key("default", Anything(), "The value used when none is given."),
                Key("enum", ListOf(Anything()), "The only values allowed."),
                Key("description", Text(), "What the parameter means."),
            )
        ),
        "The parameters a job made from this template is given with `--param`.",
    ),
    Key(
        "job",
        Body("job"),
        "The job this template makes: a job body, with `${parameter}` substitutions.",
        required=True,
    ),
)

PIPELINE = record(
    *_metadata("pipeline", named=False),
    _params("pipeline"),
    Key("schedule", SCHEDULE, "When the pipeline runs on its own."),
    Key(
        "jobs",
        ListOf(
            either(
                ("a job name", NAME),
                (
                    "a job entry with an id and its dependencies",
                    record(
                        Key("id", NAME, "The entry's id, for `depends_on`.", required=True),
                        Key("name", NAME, "The job to run, by name.", required=True),
                        Key("depends_on", ListOf(NAME), "Ids of the entries that must finish first."),
                        Key("params", FREE, "Values for the job's `${NAME}` substitutions."),
                    ),
                ),
            )
        ),
        "The jobs to run: job names run in order, or entries with ids and `depends_on`.",
        required=True,
    ),
)

STACK = record(
    *_metadata("stack", versioned=True),
    Key(
        "steps",
        ListOf(
            ByKey(
                "parallel",
                present=record(
                    Key("id", NAME, "The group's id."),
                    Key("parallel", ListOf(STEP), "Prompt steps run side by side.", required=True),
                ),
                absent=STEP,
            )
        ),
        "The stack's steps, in order: prompt steps, or `parallel` groups of them.",
        required=True,
    ),
)

PROMPT = record(
    *_metadata("prompt module", versioned=True, described=True),
    Key("authors", ListOf(Text()), "Who wrote and maintains the module."),
    Key("tags", ListOf(Text()), "Words to find the module by."),
    Key(
        "model",
        record(
            Key("name", Text(examples=("gpt-4",)), "The default model."),
            Key("provider", Text(), "The default provider, by its name in the workspace's `providers`."),
            *_model_keys(),
            Key("top_p", TOP_P, "Nucleus sampling: the probability mass to sample from, `0` to `1`."),
        ),
        "The model defaults; a job's prompt entry overrides them.",
    ),
    Key(
        "variables",
        MapOf(
            record(
                Key("type", VALUE_TYPE, "The variable's type.", default="string"),
                Key("description", Text(), "What the variable holds."),
                Key("required", Boolean(), "Whether every item must supply it.", default=False),
                Key("default", Anything(), "The value used when the row lacks it."),
            ),
            keys=NAME,
        ),
        "The template's input variables, bound from the input row's field of the same name.",
    ),
    Key(
        "parameters",
        MapOf(
            record(
                Key("type", VALUE_TYPE, "The parameter's type.", default="string"),
                Key("description", Text(), "What the parameter changes."),
                Key("default", Anything(), "The value used when the job sets none."),
                Key("enum", ListOf(Anything()), "The only values allowed."),
                Key("minimum", Number(), "The least value allowed."),
                Key("maximum", Number(), "The greatest value allowed."),
            ),
            keys=NAME,
        ),
        "Tunable switches a job sets through its prompt entry's `parameters`; the template reads `parameters.NAME`.",
    ),
    Key(
        "template",
        record(
            Key("system", Text(), "The system message, a Jinja2 template."),
            Key("user", Text(), "The user message, a Jinja2 template.", required=True),
        ),
        "The messages sent to the model, as Jinja2 templates over the variables, `input`, `parameters` and earlier "
        "prompts' outputs.",
        required=True,
    ),
    Key(
        "output",
        record(
            Key("format", Choice("json|text"), "Whether the model answers with JSON or text.", default="json"),
            Key("schema", MapOf(Anything()), "A JSON Schema the JSON answer must satisfy."),
        ),
        "The shape of the model's answer.",
    ),
)

WORKSPACE = record(
    Key("name", NAME, "The workspace's name."),
    Key("description", Text(), "What the workspace is for."),
    Key("default_profile", NAME, "The profile used when `--profile` is not given."),
    Key(
        "database",
        Text(),
        "The default database a job's `database` source or destination uses: a SQLite path or a URL.",
    ),
    Key(
        "connections",
        MapOf(
            either(
                ("a connection URL", Text()),
                (
                    "a connection with a URL and a description",
                    record(
                        Key(
                            "url",
                            Text(),
                            "The connection URL, such as `postgresql://host/db` or `sqlite:///data.db`.",
                            required=True,
                        ),
                        Key("description", Text(), "What the connection is."),
                    ),
                ),
            ),
            keys=NAME,
        ),
        "Named database connections, referred to by jobs' `connection`: a URL, or a mapping with `url`.",
    ),
    Key(
        "providers",
        MapOf(
            record(
                Key("base_url", Text(), "The provider's API base URL."),
                Key("api_key_env", ENV_NAME, "The environment variable that holds the API key."),
                Key("requests_per_minute", POSITIVE, "The provider's request limit."),
                Key("tokens_per_minute", POSITIVE, "The provider's token limit."),
                Key(
                    "structured_output",
                    Choice("json_schema|json_object|none"),
                    "How the provider's server takes an output schema: `json_schema` (structured outputs, the "
                    "default), `json_object` or `none` (the schema goes into the system message).",
                ),
                Key("timeout", SECONDS, "Seconds for one call to this provider, unless the prompt says."),
            ),
            keys=NAME,
        ),
        "Named model providers, referred to by prompts' `provider`.",
    ),
    Key(
        "fallback_provider",
        Choice("mock"),
        "For demos that must run anywhere: calls whose provider has no API key set go to this provider "
        "(only `mock`), and the run says so.",
    ),
    Key(
        "smtp",
        record(
            Key("host", Text(), "The SMTP server's host."),
            Key("port", Integer(minimum=1, maximum=65535), "The SMTP server's port."),
            Key("tls", Boolean(), "Whether to use TLS."),
            Key("username", Text(), "The SMTP user name."),
            Key("password_env", ENV_NAME, "The environment variable that holds the SMTP password."),
        ),
        "The mail server for `email` alerts.",
    ),
    Key("state", Text(), "Where the run ledger is kept: a SQLite path or a PostgreSQL URL."),
    Key(
        "engine",
        Choice("local|dask"),
        "The engine jobs run on unless their `execution.engine` or `run-job --engine` says: `local` or `dask`.",
    ),
    Key(
        "dask",
        record(
            Key("scheduler", Text(), "The Dask scheduler's address (`tcp://host:8786`); none: a local cluster."),
            Key("workers", POSITIVE, "Worker processes of the local cluster started when no scheduler is given."),
            Key("partition_size", POSITIVE, "Items in one partition (one Dask task)."),
        ),
        "How the `dask` engine reaches its cluster.",
    ),
    Key(
        "paths",
        record(
            Key(
                "allow",
                ListOf(Text()),
                "Folders outside the workspace that jobs may read and write (symlinks are resolved first).",
            ),
        ),
        "Where jobs' files may be: inside the workspace, and under the folders `allow` lists.",
    ),
)


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            name="job",
            title="Sleipnir job",
            about="A unit of work: a set of prompts run over input items.",
            body=JOB,
        ),
        Kind(
            name="template",
            title="Sleipnir job template",
            about="A reusable job with parameters, made into jobs with `sleipnir create-job-from-template`.",
            body=TEMPLATE,
        ),
        Kind(
            name="pipeline",
            title="Sleipnir pipeline",
            about="Jobs run in order or as a dependency graph.",
            body=PIPELINE,
        ),
        Kind(
            name="stack",
            title="Sleipnir prompting stack",
            about="A reusable chain of prompt steps, with conditions and parallel groups.",
            body=STACK,
        ),
        Kind(
            name="prompt",
            title="Sleipnir prompt module",
            about="A versioned prompt: model defaults, variables, a Jinja2 template and an output schema.",
            body=PROMPT,
        ),
        Kind(
            name="workspace",
            title="Sleipnir workspace manifest (sleipnir.yaml)",
            about="The workspace's `sleipnir.yaml`: its name, default profile, connections and providers.",
            body=WORKSPACE,
            keyed=False,
        ),
    )
}
"""Every kind, in the order the schema files list them."""
