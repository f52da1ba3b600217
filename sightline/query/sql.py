"""Read-only SQL for users: one SELECT over a project's ``events``, ``persons`` and ``sessions``.

:func:`run_sql` takes text from an API caller and runs it only if it is provably a single,
side-effect-free query confined to the caller's project:

1. **Parse** with sqlglot (DuckDB dialect). Exactly one statement, and it must be a query
   (``SELECT``, ``WITH … SELECT``, ``UNION``/``INTERSECT``/``EXCEPT``, DuckDB's ``FROM``-first form).
2. **Rewrite** PostHog-style conveniences: ``properties.$browser``, ``properties.plan.tier``,
   ``e.properties.$os`` and ``person.properties.email`` (on events: the current person's
   property) become JSON extraction; ``properties->>'$browser'`` (a key that DuckDB would read
   as a bad JSONPath) reads the key ``$browser``; ``$session_duration`` and ``s.$is_bounce``
   name the ``"$…"`` columns of ``sessions``. Anything else that looks like a parameter
   (``?``, ``$1``) is refused: the only bound value is the project id.
3. **Check** every table reference against the scope rules of SQL: a name must be one of
   :data:`TABLES` or a CTE of the query that is visible at that point; no ``schema.table``, no
   file paths, no table functions except :data:`TABLE_FUNCTIONS`. User CTEs may not reuse the
   name of a built-in table or of any relation in the database. Functions called by name must
   be on the allowlist (:data:`FUNCTIONS`: ordinary scalar, aggregate and window functions; no
   settings, variables, sequences, files, catalog or system functions).
4. **Confine**: the built-in names become CTEs prepended to the query, each filtered to the
   project (``WHERE project_id = $project``) and without a ``project_id`` column, so the user's
   query cannot see another project's rows.
5. **Re-check** the final SQL with DuckDB's own parser (``json_serialize_sql``) against the same
   allowlists, so a difference between sqlglot's and DuckDB's reading of the text cannot open a
   hole.
6. **Run** in a cursor of its own inside a ``READ ONLY`` transaction, interrupted after
   ``timeout_s`` (error ``query_timeout``, HTTP 408), with a default ``LIMIT`` when the query
   has none and at most ``max_rows`` rows returned (``truncated`` says when rows were left out).

On the ClickHouse store steps 1–4 are the same; the checked tree is then translated with
sqlglot (see "ClickHouse" below and ``docs/deploy-clickhouse.md``), step 5 is ClickHouse's own
parser (``EXPLAIN AST``) and step 6 runs with ``readonly=1``, ``max_execution_time`` and
``max_result_rows``.

Memory: DuckDB only has a database-wide limit (80% of RAM by default; operators spill to disk
above it); ``SIGHTLINE_DUCKDB_MEMORY_LIMIT`` caps it when the database is opened.
"""

from __future__ import annotations

import base64
import datetime as _dt
import math
import re
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import sqlglot
from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import ErrorLevel, ParseError, UnsupportedError
from sqlglot.tokens import TokenType

from sightline.errors import InvalidInput
from sightline.query.sessions import EVENT_COLUMNS, events_sql, sessions_sql
from sightline.storage.base import QueryError, QueryTimeout, Storage

MAX_QUERY_CHARS = 100_000
PROJECT_PARAM = "project"


# -- the tables users see ---------------------------------------------------------------------

# name → the project-scoped SELECT that stands for it (each binds ``$project``)
TABLES: dict[str, str] = {
    "events": events_sql("$" + PROJECT_PARAM),
    "persons": ("SELECT id, created_at, properties, is_identified FROM main.persons "
                f"WHERE project_id = ${PROJECT_PARAM}"),
    "person_distinct_ids": ("SELECT distinct_id, person_id FROM main.person_distinct_ids "
                            f"WHERE project_id = ${PROJECT_PARAM}"),
    "groups": ("SELECT g.group_type_index, t.group_type, g.group_key, g.created_at, g.properties "
               "FROM main.groups g LEFT JOIN main.group_types t "
               "ON t.project_id = g.project_id AND t.group_type_index = g.group_type_index "
               f"WHERE g.project_id = ${PROJECT_PARAM}"),
    "sessions": sessions_sql("$" + PROJECT_PARAM),
}
# Plain relations are inlined (filters push down into the scans); sessions is an aggregate.
_NOT_MATERIALIZED = {"events", "persons", "person_distinct_ids", "groups"}
RESERVED = frozenset(TABLES)

TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest", "json_each", "json_tree"})

# -- the function allowlist ---------------------------------------------------------------------
# DuckDB names (as DuckDB's parser reports them). A test checks each exists in duckdb_functions().

_OPERATORS = """
+ - * / // % ** ^ & | << >> ~ || ->> ~~ !~~ ~~* !~~* ~~~ ^@ @> <@ && <-> <=> @ !__postfix
"""
_MATH = """
abs acos acosh add asin asinh atan atan2 atanh bit_count cbrt ceil ceiling cos cosh cot degrees
divide even exp factorial fdiv floor fmod gamma gcd greatest greatest_common_divisor isfinite isinf
isnan lcm least least_common_multiple lgamma ln log log10 log2 mod multiply nextafter pi pow power
radians random round round_even roundbankers sign signbit sin sinh sqrt subtract tan tanh trunc xor
"""
_TEXT = """
ascii bar bin bit_length char_length character_length chr concat concat_ws contains
damerau_levenshtein decode editdist3 encode ends_with format formatReadableDecimalSize
formatReadableSize format_bytes from_base64 from_binary from_hex hamming hash hex ilike_escape instr
jaccard jaro_similarity jaro_winkler_similarity lcase left left_grapheme len length length_grapheme
levenshtein like_escape lower lpad ltrim md5 md5_number md5_number_lower md5_number_upper mismatches
nfc_normalize not_ilike_escape not_like_escape octet_length ord parse_formatted_bytes position
prefix printf regexp_escape regexp_extract regexp_extract_all regexp_full_match regexp_matches
regexp_replace regexp_split_to_array regexp_split_to_table repeat replace reverse right
right_grapheme rpad rtrim sha1 sha256 split split_part starts_with str_split str_split_regex
string_split string_split_regex string_to_array strip_accents strlen strpos substr substring
substring_grapheme suffix to_base to_base64 to_binary to_hex translate trim ucase unbin unhex unicode
upper url_decode url_encode base64 uuid gen_random_uuid uuidv4 uuidv7 uuid_extract_timestamp
uuid_extract_version typeof pg_typeof error
"""
_TIME = """
age ago century current_date current_localtime current_localtimestamp date_add date_diff date_part
date_sub date_trunc datediff datepart datesub datetrunc day dayname dayofmonth dayofweek dayofyear
days_in_month decade epoch epoch_ms epoch_ns epoch_us era get_current_time get_current_timestamp
hour isodow isoyear julian last_day make_date make_time make_timestamp make_timestamp_ms
make_timestamp_ns make_timestamptz microsecond millennium millisecond minute month monthname
nanosecond normalized_interval now quarter second strftime strptime time_bucket timezone
timezone_hour timezone_minute to_centuries to_days to_decades to_hours to_microseconds
to_millennia to_milliseconds to_minutes to_months to_quarters to_seconds to_timestamp to_weeks
to_years today transaction_timestamp try_strptime week weekday weekofyear year yearweek
"""
_NESTED = """
aggregate apply array_aggr array_aggregate array_append array_apply array_cat array_concat
array_contains array_cosine_distance array_cosine_similarity array_cross_product array_distance
array_distinct array_dot_product array_extract array_filter array_grade_up array_has array_has_all
array_has_any array_indexof array_inner_product array_intersect array_length
array_negative_dot_product array_negative_inner_product array_pop_back array_pop_front
array_position array_prepend array_push_back array_push_front array_reduce array_resize
array_reverse array_reverse_sort array_select array_slice array_sort array_to_string
array_transform array_unique array_value array_where array_zip cardinality element_at filter
flatten generate_series generate_subscripts grade_up list_aggr list_aggregate list_any_value
list_append list_apply list_approx_count_distinct list_avg list_bit_and list_bit_or list_bit_xor
list_bool_and list_bool_or list_cat list_concat list_contains list_cosine_distance
list_cosine_similarity list_count list_distance list_distinct list_dot_product list_element
list_entropy list_extract list_filter list_first list_grade_up list_has list_has_all list_has_any
list_histogram list_indexof list_inner_product list_intersect list_kurtosis list_kurtosis_pop
list_last list_mad list_max list_median list_min list_mode list_negative_dot_product
list_negative_inner_product list_pack list_position list_prepend list_product list_reduce
list_resize list_reverse list_reverse_sort list_select list_sem list_skewness list_slice
list_sort list_stddev_pop list_stddev_samp list_string_agg list_sum list_transform list_unique
list_value list_var_pop list_var_samp list_where list_zip map map_concat map_contains
map_contains_entry map_contains_value map_entries map_extract map_extract_value map_from_entries
map_keys map_values range reduce row struct_concat struct_contains struct_extract
struct_extract_at struct_has struct_indexof struct_insert struct_keys struct_pack struct_position
struct_update struct_values union_extract union_tag union_value unnest equi_width_bins
is_histogram_other_bin
"""
_JSON = """
json json_array json_array_length json_contains json_exists json_extract json_extract_path
json_extract_path_text json_extract_string json_keys json_merge_patch json_object json_pretty
json_quote json_structure json_transform json_transform_strict json_type json_valid json_value
to_json array_to_json row_to_json from_json from_json_strict json_group_array json_group_object
json_group_structure json_insert json_remove json_replace json_set json_strip_nulls
"""
_CONDITIONAL = "if nullif"
_AGGREGATES = """
any_value approx_count_distinct approx_quantile approx_top_k arbitrary arg_max arg_max_null
arg_max_nulls_last arg_min arg_min_null arg_min_nulls_last argmax argmin array_agg avg bit_and
bit_or bit_xor bitstring_agg bool_and bool_or corr count count_if count_star countif covar_pop
covar_samp entropy favg first fsum geomean geometric_mean group_concat histogram histogram_exact
kahan_sum kurtosis kurtosis_pop last list listagg mad max max_by mean median min min_by mode
product quantile quantile_cont quantile_disc regr_avgx regr_avgy regr_count regr_intercept
regr_r2 regr_slope regr_sxx regr_sxy regr_syy reservoir_quantile sem skewness stddev stddev_pop
stddev_samp string_agg sum sum_no_overflow sumkahan var_pop var_samp variance wavg weighted_avg
"""
_WINDOW = """
cume_dist dense_rank fill first_value lag last_value lead nth_value ntile percent_rank rank
rank_dense row_number
"""
OPERATORS = frozenset(_OPERATORS.split())
FUNCTIONS = frozenset(
    n.lower() for block in (_MATH, _TEXT, _TIME, _NESTED, _JSON, _CONDITIONAL, _AGGREGATES, _WINDOW)
    for n in block.split())
WINDOW_FUNCTIONS = frozenset(_WINDOW.split()) | frozenset(_AGGREGATES.split())


# -- errors and results -------------------------------------------------------------------------

class SQLRejected(InvalidInput):
    """The query was refused (or stopped); ``code`` says why, ``detail`` says what to change."""

    code = "sql_rejected"

    def __init__(self, detail: str, *, code: str, status: int | None = None) -> None:
        super().__init__(detail, code=code, status=status, attr="query")


@dataclass
class SQLResult:
    columns: list[str]
    types: list[str]
    results: list[list]
    truncated: bool = False
    sql: str = field(default="", repr=False)  # what ran (for debugging; includes the project CTEs)

    def to_json(self) -> dict:
        return {"columns": self.columns, "types": self.types, "results": self.results,
                "truncated": self.truncated}


@dataclass
class PreparedSQL:
    sql: str                 # the final statement (binds ``$project``)
    tables: set[str]         # built-in tables it reads
    ctes: set[str]           # the user's CTE names
    row_limit: int           # rows to return at most; one more is fetched to detect truncation


# -- parsing --------------------------------------------------------------------------------------

class _Dialect(DuckDB):
    """DuckDB, keeping JSON path literals as written (sqlglot would rewrite ``'$browser'`` into
    ``'$.browser'``, another key)."""

    def to_json_path(self, path):  # noqa: D102
        return path


_D = _Dialect()
_QUERY_START = {TokenType.SELECT, TokenType.WITH, TokenType.FROM, TokenType.L_PAREN}

_FORBIDDEN_NODES = tuple(getattr(exp, n) for n in (
    "DML", "DDL", "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "Command", "Set",
    "Pragma", "Copy", "Attach", "Detach", "Use", "Install", "Describe", "Summarize", "Show",
    "Transaction", "Commit", "Rollback", "Into", "LoadData", "Grant", "Revoke", "Analyze", "Kill",
    "Refresh", "Cache", "Uncache", "Export", "TruncateTable", "Declare", "Comment", "Execute")
    if hasattr(exp, n))


def _reject(detail: str, code: str, status: int | None = None) -> SQLRejected:
    return SQLRejected(detail, code=code, status=status)


def _names_list() -> str:
    return ", ".join(TABLES)


def _statement_kind(tokens: list) -> str:
    """``DROP TABLE``, ``ATTACH``, ``EXPORT DATABASE``…: the statement's leading keywords."""
    if not tokens:
        return "?"
    words = [tokens[0].text.upper()[:30]]
    if len(tokens) > 1 and tokens[1].token_type not in (TokenType.VAR, TokenType.STRING, TokenType.NUMBER) \
            and tokens[1].text.replace("_", "").isalpha():
        words.append(tokens[1].text.upper()[:30])
    return " ".join(words)


def _split_statements(query: str) -> list[list]:
    try:
        tokens = _D.tokenize(query)
    except Exception as exc:  # noqa: BLE001 - TokenError, or a tokenizer bug: refuse
        raise _reject(f"The query could not be read: {_short(exc)}. Check quotes and comments.",
                      "sql_syntax") from None
    statements: list[list] = [[]]
    for t in tokens:
        if t.token_type == TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(t)
    return [s for s in statements if s]


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]


def _parse(query: str) -> exp.Expression:
    if not isinstance(query, str):
        raise _reject("`query` must be a string of SQL.", "sql_empty")
    if len(query) > MAX_QUERY_CHARS:
        raise _reject(f"The query is {len(query):,} characters long; the limit is {MAX_QUERY_CHARS:,}.",
                      "sql_too_long")
    statements = _split_statements(query)
    if not statements:
        raise _reject("The query is empty.", "sql_empty")
    if len(statements) > 1:
        kinds = ", ".join(_statement_kind(s) for s in statements[:5])
        raise _reject(f"Only one statement can be run at a time; this text has {len(statements)} "
                      f"({kinds}). Remove the extra statements (and the semicolons between them).",
                      "sql_multiple_statements")
    first = statements[0][0]
    if first.token_type not in _QUERY_START:
        raise _reject(f"Only read-only queries are allowed (SELECT, WITH … SELECT, UNION, INTERSECT, "
                      f"EXCEPT), not {_statement_kind(statements[0])} statements.",
                      "sql_statement_not_allowed")
    try:
        trees = [t for t in sqlglot.parse(query, dialect=_D) if t is not None]
    except ParseError as exc:
        err = exc.errors[0] if exc.errors else {}
        where = f" (line {err.get('line')}, column {err.get('col')})" if err.get("line") else ""
        near = err.get("highlight")
        raise _reject(f"The query could not be parsed: {err.get('description', _short(exc))}"
                      f"{where}{f' near {near!r}' if near else ''}.", "sql_syntax") from None
    except RecursionError:
        raise _reject("The query is nested too deeply.", "sql_too_complex") from None
    except Exception as exc:  # noqa: BLE001 - a parser bug must refuse the query, not crash
        raise _reject(f"The query could not be parsed: {_short(exc)}.", "sql_syntax") from None
    if len(trees) != 1:
        raise _reject("Only one statement can be run at a time.", "sql_multiple_statements")
    tree = trees[0]
    while isinstance(tree, exp.Subquery) and not tree.alias and isinstance(tree.this, exp.Query):
        tree = tree.this  # "(SELECT …)"
    if not isinstance(tree, (exp.Select, exp.SetOperation)):
        raise _reject(f"Only read-only queries are allowed (SELECT, WITH … SELECT, UNION, INTERSECT, "
                      f"EXCEPT), not {type(tree).__name__.upper()} statements.",
                      "sql_statement_not_allowed")
    return tree


# -- rewriting ------------------------------------------------------------------------------------

def _pointer(keys: list[str]) -> str:
    return "".join("/" + k.replace("~", "~0").replace("/", "~1") for k in keys)


def _part(node: exp.Expression) -> tuple[str, bool]:
    """(text, quoted) of one part of a dotted name; ``$x`` parts arrive as placeholders."""
    if isinstance(node, exp.Placeholder):
        if not node.this or str(node.this).isdigit():
            raise _reject("Query parameters (`?`, `$1`) are not supported: write values in the query.",
                          "sql_parameter_not_allowed")
        return "$" + str(node.this), True
    if isinstance(node, exp.Identifier):
        return node.this, bool(node.args.get("quoted"))
    if isinstance(node, exp.Star):
        return "*", False
    raise ValueError(node)


def _flatten(node: exp.Expression) -> list[exp.Expression] | None:
    """The parts of ``a.b.c…`` (a Column, possibly inside Dots), or None for other shapes."""
    tail: list[exp.Expression] = []
    while isinstance(node, exp.Dot):
        if not isinstance(node.expression, (exp.Identifier, exp.Placeholder)):
            return None
        tail.insert(0, node.expression)
        node = node.this
    if not isinstance(node, exp.Column):
        return None
    head = [node.args.get(k) for k in ("catalog", "db", "table") if node.args.get(k) is not None]
    if not all(isinstance(p, (exp.Identifier, exp.Placeholder)) for p in head):
        return None
    return head + [node.this] + tail


def _relation_names(tree: exp.Expression) -> set[str]:
    names = set()
    for t in tree.find_all(exp.Table):
        names.add(t.name.lower())
        if t.alias:
            names.add(t.alias.lower())
    for s in tree.find_all(exp.Subquery):
        if s.alias:
            names.add(s.alias.lower())
    return names


def _rewrite(tree: exp.Expression) -> exp.Expression:
    relations = _relation_names(tree)

    def json_get(source: exp.Expression, keys: list[str]) -> exp.Expression:
        return exp.Anonymous(this="json_extract_string",
                             expressions=[source, exp.Literal.string(_pointer(keys))])

    def convert(node: exp.Expression) -> exp.Expression:
        if isinstance(node, (exp.Dot, exp.Column)) and not (
                isinstance(node, exp.Column) and isinstance(node.parent, exp.Dot) and node.arg_key == "this"):
            parts = _flatten(node)
            if parts is None:
                return node
            texts = [_part(p) for p in parts]
            lowered = [t.lower() if not q or not t.startswith("$") else t for t, q in texts]
            idx = next((i for i, t in enumerate(lowered[:3]) if t == "properties"), None)
            if idx is not None and idx < len(texts) - 1:
                prefix, keys = lowered[:idx], [t for t, _ in texts[idx + 1:]]
                label = "properties." + ".".join(keys)
                new: exp.Expression | None = None
                if not prefix:
                    new = json_get(exp.column("properties"), keys)
                elif len(prefix) == 1 and prefix[0] != "person" or (
                        prefix == ["person"] and "person" in relations):
                    new = json_get(exp.column("properties", table=texts[0][0], quoted=texts[0][1]), keys)
                elif prefix[-1] == "person" and len(prefix) <= 2:
                    # the current person's property, for a row of events
                    outer = (exp.column("person_id", table=texts[0][0], quoted=texts[0][1])
                             if len(prefix) == 2 else exp.column("person_id"))
                    new = exp.Subquery(this=exp.select(
                        json_get(exp.column("properties", table="__person"), keys)).from_(
                        exp.Table(this=exp.to_identifier("persons"),
                                  alias=exp.TableAlias(this=exp.to_identifier("__person")))).where(
                        exp.EQ(this=exp.column("id", table="__person"), expression=outer)))
                    new.meta["sl_person"] = (outer.copy(), keys)  # ClickHouse reads a joined column
                    label = "person." + label
                if new is not None:
                    new.meta["sl_label"] = label
                    return new
            if any(isinstance(p, exp.Placeholder) for p in parts) and isinstance(node, exp.Column):
                # HogQL's `$session_duration`, `s.$is_bounce`: the "$…" columns
                for key in ("this", "table", "db", "catalog"):
                    value = node.args.get(key)
                    if isinstance(value, exp.Placeholder):
                        node.set(key, exp.to_identifier(_part(value)[0], quoted=True))
            return node
        if isinstance(node, exp.Placeholder):
            text, _ = _part(node)
            return exp.column(exp.to_identifier(text, quoted=True))
        if isinstance(node, (exp.JSONExtract, exp.JSONExtractScalar)):
            path = node.expression
            if isinstance(path, exp.Literal) and path.is_string:
                text = path.this
                if text.startswith("$") and not (text == "$" or text[1:2] in (".", "[")):
                    label = node.sql(dialect=_D, comments=False)
                    node.set("expression", exp.Literal.string(_pointer([text])))  # a "$key", not a path
                    node.meta["sl_label"] = label
            return node
        return node

    tree = tree.transform(convert, copy=False)
    for select in tree.find_all(exp.Select):
        for i, proj in enumerate(select.expressions):
            label = proj.meta.get("sl_label") if not isinstance(proj, exp.Alias) else None
            if label:
                select.expressions[i] = exp.alias_(proj, label, quoted=True, copy=False)
    return tree


# -- checking -------------------------------------------------------------------------------------

def _func_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    text = node.sql(dialect=_D, comments=False)
    return text.split("(", 1)[0].strip().lower()


class _Checker:
    def __init__(self, catalog: set[str]) -> None:
        self.catalog = catalog
        self.tables: set[str] = set()
        self.ctes: set[str] = set()

    def visit(self, node: exp.Expression, visible: frozenset[str]) -> None:
        if isinstance(node, _FORBIDDEN_NODES):
            raise _reject(f"Only read-only queries are allowed; `{type(node).__name__.upper()}` "
                          f"cannot be used.", "sql_statement_not_allowed")
        with_ = node.args.get("with_") if isinstance(node, exp.Expression) else None
        if isinstance(with_, exp.With):
            names: list[str] = []
            for cte in with_.expressions:
                name = cte.alias_or_name.lower()
                if name in RESERVED:
                    raise _reject(f"`{name}` is a built-in table; a CTE cannot redefine it. "
                                  f"Choose another name.", "sql_reserved_name")
                if name in self.catalog:
                    raise _reject(f"`{name}` is the name of an internal table; choose another "
                                  f"name for the CTE.", "sql_reserved_name")
                if name in names:
                    raise _reject(f"The CTE `{name}` is defined twice.", "sql_syntax")
                body_visible = visible | set(names) | ({name} if with_.args.get("recursive") else set())
                self.visit(cte.this, frozenset(body_visible))
                names.append(name)
                self.ctes.add(name)
            visible = visible | frozenset(names)
        if isinstance(node, exp.Table):
            self.table(node, visible)
        elif isinstance(node, exp.Anonymous):
            name = str(node.this).lower()
            if name not in FUNCTIONS:
                raise _reject(f"The function `{name}` is not allowed in queries.", "sql_function_not_allowed")
        elif isinstance(node, exp.Placeholder):
            _part(node)
        elif isinstance(node, exp.Lateral) and isinstance(node.this, exp.Func) \
                and not isinstance(node.this, (exp.Unnest, exp.Explode)) \
                and _func_name(node.this) not in TABLE_FUNCTIONS:
            raise _reject(f"The table function `{_func_name(node.this)}` is not allowed; only "
                          f"{', '.join(sorted(TABLE_FUNCTIONS))} can be used in FROM.",
                          "sql_table_function_not_allowed")
        for child in node.iter_expressions():
            if child is with_:
                continue
            if isinstance(node, exp.Table) and child is node.this and isinstance(child, exp.Func):
                for arg in child.iter_expressions():  # a table function's arguments
                    self.visit(arg, visible)
                continue
            self.visit(child, visible)

    def table(self, node: exp.Table, visible: frozenset[str]) -> None:
        target = node.this
        if isinstance(target, exp.Func):
            name = _func_name(target)
            if name not in TABLE_FUNCTIONS:
                raise _reject(f"The table function `{name}` is not allowed; only "
                              f"{', '.join(sorted(TABLE_FUNCTIONS))} can be used in FROM.",
                              "sql_table_function_not_allowed")
            return
        if not isinstance(target, exp.Identifier):
            raise _reject(f"`{node.sql(dialect=_D)[:80]}` cannot be used as a table.", "sql_table_not_allowed")
        name = str(target.this)
        if node.args.get("db") is not None or node.args.get("catalog") is not None:
            raise _reject(f"Qualified table names such as `{node.sql(dialect=_D, comments=False)[:80]}` "
                          f"are not allowed; use the tables {_names_list()}.", "sql_table_not_allowed")
        lower = name.lower()
        if lower in visible:
            if lower in RESERVED:
                self.tables.add(lower)
            return
        if any(c in name for c in "/\\:.") or lower.endswith((".csv", ".parquet", ".json")):
            raise _reject(f"Files cannot be read from queries (`{name[:80]}`).", "sql_table_not_allowed")
        raise _reject(f"There is no table `{name[:80]}` here. Tables you can query: {_names_list()} "
                      f"(and CTEs defined in the query).", "sql_table_not_allowed")


def _catalog_names(storage: Storage) -> set[str]:
    if getattr(storage, "dialect", "duckdb") == "clickhouse":
        rows = storage.execute("SELECT lower(name) FROM system.tables WHERE database = currentDatabase()").rows
        return {r[0] for r in rows} - RESERVED
    rows = storage.execute("SELECT lower(table_name) FROM duckdb_tables() "
                           "UNION SELECT lower(view_name) FROM duckdb_views()").rows
    return {r[0] for r in rows} - RESERVED


def _limit(tree: exp.Expression, default_limit: int, max_rows: int) -> int:
    """Apply the default LIMIT / the cap; returns the number of rows to return at most."""
    limit = tree.args.get("limit")
    if limit is None:
        n = max(0, min(default_limit, max_rows))
        tree.set("limit", exp.Limit(expression=exp.Literal.number(n + 1)))
        return n
    value = limit.expression if isinstance(limit, exp.Limit) else None
    simple = (isinstance(value, exp.Literal) and not value.is_string and str(value.this).isdigit()
              and not limit.args.get("limit_options") and not limit.args.get("offset"))
    if simple:
        n = int(value.this)
        if n > max_rows:
            limit.set("expression", exp.Literal.number(max_rows + 1))
            return max_rows
        return n
    return max_rows  # an expression or a percentage: the fetch stops after max_rows + 1 rows


def prepare_sql(query: str, *, catalog: set[str] | frozenset[str] = frozenset(),
                default_limit: int = 100, max_rows: int = 10_000, engine: str = "duckdb") -> PreparedSQL:
    """Parse, rewrite and check ``query``; build the project-confined SQL (no database needed,
    except for ``catalog``: the names of the database's own relations). ``engine="clickhouse"``
    translates the checked query to ClickHouse SQL (see :func:`_to_clickhouse`)."""
    tree = _parse(query)
    if engine == "clickhouse":
        return _prepare_clickhouse(tree, catalog, default_limit, max_rows)
    checker = _Checker({c.lower() for c in catalog} - RESERVED)
    try:
        tree = _rewrite(tree)
        checker.visit(tree, RESERVED)
        row_limit = _limit(tree, default_limit, max_rows)
        with_ = tree.args.get("with_")
        user_ctes: list[str] = []
        recursive = False
        if isinstance(with_, exp.With):
            recursive = bool(with_.args.get("recursive"))
            user_ctes = [c.sql(dialect=_D, comments=False) for c in with_.expressions]
            tree.set("with_", None)
        body = tree.sql(dialect=_D, comments=False)
    except SQLRejected:
        raise
    except RecursionError:
        raise _reject("The query is nested too deeply.", "sql_too_complex") from None
    except Exception as exc:  # noqa: BLE001 - anything we cannot analyse is refused
        raise _reject(f"The query could not be analysed: {_short(exc)}.", "sql_syntax") from None
    needed = [t for t in TABLES if t in checker.tables]
    prelude = [f"{t} AS {'NOT MATERIALIZED ' if t in _NOT_MATERIALIZED else ''}({TABLES[t]})" for t in needed]
    ctes = prelude + user_ctes
    sql = (f"WITH {'RECURSIVE ' if recursive else ''}{', '.join(ctes)} {body}" if ctes else body)
    return PreparedSQL(sql, set(needed), checker.ctes, row_limit)


# -- the second opinion: DuckDB's own parser ------------------------------------------------------

_TABLEREF_TYPES = {"BASE_TABLE", "JOIN", "SUBQUERY", "TABLE_FUNCTION", "EMPTY", "EXPRESSION_LIST",
                   "PIVOT"}


def _duckdb_check(storage: Storage, prepared: PreparedSQL) -> None:
    try:
        rows = storage.execute("SELECT json_serialize_sql($q)", {"q": prepared.sql}).rows
        tree = orjson.loads(rows[0][0])
    except Exception as exc:  # noqa: BLE001 - too deep for the serializer, etc.: refuse
        raise _reject(f"The query could not be checked: {_short(exc)}.", "sql_too_complex") from None
    if tree.get("error"):
        raise _reject(f"The query uses a construct that is not supported here: "
                      f"{str(tree.get('error_message', ''))[:300]}", "sql_statement_not_allowed")
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise _reject("Only one statement can be run at a time.", "sql_multiple_statements")
    allowed_tables = RESERVED | prepared.ctes

    def walk(obj: Any, top: bool = False) -> None:
        if isinstance(obj, list):
            for item in obj:
                walk(item)
            return
        if not isinstance(obj, dict):
            return
        cls, typ = obj.get("class"), obj.get("type")
        if cls == "FUNCTION":
            name = str(obj.get("function_name", "")).lower()
            ok = name in OPERATORS if obj.get("is_operator") else name in FUNCTIONS
            if not ok or obj.get("schema") or obj.get("catalog"):
                raise _reject(f"The function `{name}` is not allowed in queries.", "sql_function_not_allowed")
        elif cls == "WINDOW":
            name = str(obj.get("function_name", "")).lower()
            if name not in WINDOW_FUNCTIONS or obj.get("schema") or obj.get("catalog"):
                raise _reject(f"The function `{name}` is not allowed in queries.", "sql_function_not_allowed")
        elif cls == "PARAMETER":
            if obj.get("identifier") != PROJECT_PARAM:
                raise _reject("Query parameters are not supported: write values in the query.",
                              "sql_parameter_not_allowed")
        elif "sample" in obj and cls is None and not str(typ).endswith("_NODE"):  # a table reference
            if typ not in _TABLEREF_TYPES:
                raise _reject(f"`{typ}` cannot be used as a table.", "sql_table_not_allowed")
            if typ == "BASE_TABLE":
                name = str(obj.get("table_name", "")).lower()
                if obj.get("schema_name") or obj.get("catalog_name") or name not in allowed_tables:
                    raise _reject(f"There is no table `{name}` here. Tables you can query: "
                                  f"{_names_list()}.", "sql_table_not_allowed")
            elif typ == "TABLE_FUNCTION":
                fn = obj.get("function") or {}
                name = str(fn.get("function_name", "")).lower()
                if name not in TABLE_FUNCTIONS or fn.get("schema") or fn.get("catalog"):
                    raise _reject(f"The table function `{name}` is not allowed.",
                                  "sql_table_function_not_allowed")
                walk(fn.get("arguments"))
                walk([v for k, v in obj.items() if k != "function"])
                return
        for key, value in obj.items():
            if key == "cte_map" and top:
                entries = (value or {}).get("map") or []
                walk([e for e in entries if str(e.get("key", "")).lower() not in RESERVED])
                continue
            walk(value)

    try:
        walk(statements[0].get("node") or {}, top=True)
        walk([v for k, v in statements[0].items() if k != "node"])
    except RecursionError:
        raise _reject("The query is nested too deeply.", "sql_too_complex") from None


# -- ClickHouse: the same checked query, translated -------------------------------------------------
#
# On the ClickHouse store the query language stays DuckDB's (what the guard above validates), so a
# saved query gives the same answer on both engines for the common cases. The checked AST is
# translated with sqlglot's ClickHouse generator, after three rewrites of our own:
#
# * JSON access (``properties.$browser``, ``properties->>'x'``, ``json_extract_string(p, '$.x')``)
#   becomes ``JSONExtract(p, 'k1', 'k2', 'Nullable(String)')`` (NULL when missing, strings
#   unquoted, other values as JSON text: DuckDB's ``json_extract_string``); ``->`` becomes
#   ``JSONExtractRaw`` (NULL when missing);
# * the built-in tables become project-scoped CTEs named ``__sl_<name>``, each reference renamed
#   (keeping its name as the alias), so the engine's own tables stay reachable from our CTEs only;
# * table functions (``range``, ``generate_series``, ``unnest`` in FROM, ``json_each``) are refused:
#   their ClickHouse counterparts differ in bounds and column names.
#
# The second gate is ClickHouse's own parser: ``EXPLAIN AST`` of the translated user part (without
# our CTEs) may name only the built-in tables and the query's CTEs, no qualified table, no table
# function, and none of the engine's system, file, network or dictionary functions; and the query
# runs with ``readonly=1`` (no writes, no setting changes), ``max_execution_time`` and
# ``max_result_rows``.

CH_PREFIX = "__sl_"
PERSON_PROPERTIES = "__person_properties"  # events' column of the current person's properties
_CH_UNSUPPORTED_TABLE_FUNCTIONS = TABLE_FUNCTIONS
_ch_tables_cache: dict[str, str] = {}


def clickhouse_tables() -> dict[str, str]:
    """The built-in tables for ClickHouse: name → project-scoped SELECT (binds ``$project``)."""
    if not _ch_tables_cache:
        from sightline.query.dialect import CLICKHOUSE

        p = "$" + PROJECT_PARAM
        _ch_tables_cache.update({
            "events": events_sql(p, dialect=CLICKHOUSE),
            "persons": f"SELECT id, created_at, properties, is_identified FROM persons WHERE project_id = {p}",
            "person_distinct_ids": f"SELECT distinct_id, person_id FROM person_distinct_ids WHERE project_id = {p}",
            "groups": ("SELECT g.group_type_index, t.group_type, g.group_key, g.created_at, g.properties "
                       "FROM groups g LEFT JOIN (SELECT project_id, group_type, group_type_index FROM group_types "
                       "FINAL) t ON t.project_id = g.project_id AND t.group_type_index = g.group_type_index "
                       f"WHERE g.project_id = {p}"),
            "sessions": sessions_sql(p, dialect=CLICKHOUSE),
        })
    return _ch_tables_cache


_JSONPATH_PART = re.compile(r'\.(?:"((?:[^"\\]|\\.)*)"|([^.\[\]"]+))|\[(\d+)\]')


def _json_keys(path: str) -> list[str | int] | None:
    """The keys of a JSON pointer (``/a/b``), a simple JSONPath (``$.a[0]."b c"``) or a bare key
    (DuckDB reads ``->>'plan'`` as the key ``plan``); ClickHouse array indexes are 1-based."""
    if path.startswith("/"):
        return [k.replace("~1", "/").replace("~0", "~") for k in path[1:].split("/")]
    if path.startswith("$"):
        keys: list[str | int] = []
        pos = 1
        while pos < len(path):
            m = _JSONPATH_PART.match(path, pos)
            if not m:
                return None
            if m.group(3) is not None:
                keys.append(int(m.group(3)) + 1)
            else:
                keys.append(m.group(1) if m.group(1) is not None else m.group(2))
            pos = m.end()
        return keys
    return [path]


def _ch_json(source: exp.Expression, path: exp.Expression, scalar: bool) -> exp.Expression:
    if not (isinstance(path, exp.Literal) and path.is_string):
        raise _reject("On the ClickHouse store a JSON path must be a constant string "
                      "(e.g. properties->>'$browser').", "sql_unsupported")
    keys = _json_keys(path.this)
    if keys is None:
        raise _reject(f"The JSON path {path.this[:80]!r} is not supported on the ClickHouse store; use "
                      f"keys and array indexes ($.a.b, $.a[0]).", "sql_unsupported")
    args = [source] + [exp.Literal.number(k) if isinstance(k, int) else exp.Literal.string(k) for k in keys]
    if scalar:
        return exp.Anonymous(this="JSONExtract", expressions=args + [exp.Literal.string("Nullable(String)")])
    return exp.Anonymous(this="nullIf", expressions=[exp.Anonymous(this="JSONExtractRaw", expressions=args),
                                                     exp.Literal.string("")])


def _to_clickhouse(tree: exp.Expression, rename_tables: bool = True) -> exp.Expression:
    """Rewrite a checked DuckDB tree for sqlglot's ClickHouse generator (see above); the built-in
    tables are renamed only with ``rename_tables``."""

    def convert(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Subquery) and "sl_person" in node.meta:
            # ClickHouse has no correlated subqueries of this kind: the events CTE carries the
            # current person's properties as a column instead (see _prepare_clickhouse)
            outer, keys = node.meta["sl_person"]
            column = exp.column(PERSON_PROPERTIES, table=outer.args.get("table"), quoted=True)
            tree.meta["sl_person_properties"] = True
            new = _ch_json(column, exp.Literal.string(_pointer(keys)), True)
            if node.alias:  # the label given to a (sub)query projection
                return exp.alias_(new, node.args["alias"].this, copy=False)
            return new
        if isinstance(node, exp.Anonymous):
            name = str(node.this).lower()
            if name in ("json_extract_string", "json_value", "json_extract_path_text") \
                    and len(node.expressions) == 2:
                return _ch_json(node.expressions[0], node.expressions[1], True)
            if name in ("json_extract", "json_extract_path") and len(node.expressions) == 2:
                return _ch_json(node.expressions[0], node.expressions[1], False)
            return node
        if isinstance(node, exp.TimestampTrunc) and not node.meta.get("sl_wrapped"):
            # dateTrunc('WEEK'/'MONTH'/…) is a Date in ClickHouse, a timestamp in DuckDB
            node.meta["sl_wrapped"] = True
            return exp.Anonymous(this="toDateTime64", expressions=[node, exp.Literal.number(6),
                                                                    exp.Literal.string("UTC")])
        if isinstance(node, exp.JSONExtractScalar):
            return _ch_json(node.this, node.expression, True)
        if isinstance(node, exp.JSONExtract):
            return _ch_json(node.this, node.expression, False)
        if isinstance(node, exp.Table):
            target = node.this
            if isinstance(target, exp.Func) or isinstance(node.parent, exp.Lateral):
                raise _reject(f"The table function `{_func_name(target) if isinstance(target, exp.Func) else '?'}` "
                              f"is not available on the ClickHouse store.", "sql_unsupported")
            if rename_tables and isinstance(target, exp.Identifier) and str(target.this).lower() in RESERVED \
                    and node.args.get("db") is None:
                name = str(target.this).lower()
                if not node.alias:
                    node.set("alias", exp.TableAlias(this=exp.to_identifier(str(target.this))))
                node.set("this", exp.to_identifier(CH_PREFIX + name))
            return node
        if isinstance(node, (exp.Unnest, exp.Explode)) and isinstance(node.parent, (exp.From, exp.Join, exp.Lateral)):
            raise _reject("`unnest` in FROM is not available on the ClickHouse store; use arrayJoin-free "
                          "forms such as unnest(...) in the SELECT list.", "sql_unsupported")
        return node

    return tree.transform(convert, copy=False)


def _ch_sql(tree: exp.Expression) -> str:
    try:
        return tree.sql(dialect="clickhouse", comments=False, unsupported_level=ErrorLevel.RAISE)
    except UnsupportedError as exc:
        raise _reject(f"The query uses something the ClickHouse store cannot run: {_short(exc)}.",
                      "sql_unsupported") from None


def _prepare_clickhouse(tree: exp.Expression, catalog, default_limit: int, max_rows: int) -> PreparedSQL:
    checker = _Checker({c.lower() for c in catalog} - RESERVED)
    try:
        tree = _rewrite(tree)
        checker.visit(tree, RESERVED)
        if next(tree.find_all(exp.Pivot), None) is not None:  # DuckDB's own parser refuses these too
            raise _reject("PIVOT and UNPIVOT cannot be used in queries.", "sql_statement_not_allowed")
        if next(tree.find_all(exp.Lateral), None) is not None:
            raise _reject("LATERAL is not available on the ClickHouse store.", "sql_unsupported")
        for node in tree.find_all(exp.Table):  # table functions: refused before any translation
            if isinstance(node.this, exp.Func):
                raise _reject(f"The table function `{_func_name(node.this)}` is not available on the "
                              f"ClickHouse store.", "sql_unsupported")
        row_limit = _limit(tree, default_limit, max_rows)
        tree = _to_clickhouse(tree, rename_tables=False)
        user_sql = _ch_sql(tree)  # what the second gate reads: the built-in names still plain
        tree = _to_clickhouse(tree)
        with_ = tree.args.get("with_")
        recursive = bool(isinstance(with_, exp.With) and with_.args.get("recursive"))
        user_ctes: list[str] = []
        if isinstance(with_, exp.With):
            user_ctes = [_ch_sql(c) for c in with_.expressions]
            tree.set("with_", None)
        body = _ch_sql(tree)
    except SQLRejected:
        raise
    except RecursionError:
        raise _reject("The query is nested too deeply.", "sql_too_complex") from None
    except Exception as exc:  # noqa: BLE001 - anything we cannot analyse or translate is refused
        raise _reject(f"The query could not be analysed: {_short(exc)}.", "sql_syntax") from None
    tables = dict(clickhouse_tables())
    if tree.meta.get("sl_person_properties"):
        checker.tables.add("events")
        tables["events"] = (f"SELECT ev.*, pp.properties AS {PERSON_PROPERTIES} FROM ({tables['events']}) ev "
                            f"LEFT JOIN (SELECT id, properties FROM persons WHERE project_id = ${PROJECT_PARAM}) pp "
                            f"ON pp.id = ev.person_id")
    needed = [t for t in tables if t in checker.tables]
    prelude = [f"{CH_PREFIX}{t} AS ({tables[t]})" for t in needed]
    ctes = prelude + user_ctes
    sql = f"WITH {'RECURSIVE ' if recursive else ''}{', '.join(ctes)} {body}" if ctes else body
    prepared = PreparedSQL(sql, set(needed), checker.ctes, row_limit)
    prepared.user_sql = user_sql  # type: ignore[attr-defined]
    return prepared


# ClickHouse functions that reach outside the query's rows: files, network, settings, the server,
# dictionaries and other tables. The first gate only lets allowlisted DuckDB names through; this
# list is the second gate's, over what ClickHouse itself parsed.
_CH_DENIED = frozenset("""
file url s3 s3cluster hdfs hdfscluster remote remotesecure cluster clusterallreplicas mysql postgresql
mongodb redis jdbc odbc sqlite input executable executablepool azureblobstorage gcs iceberg deltalake
hudi merge view viewifpermitted loop numbers zeros generaterandom values null dictionary
getsetting getsettingordefault getmergetreesetting getserversetting getmacro getserverport
currentdatabase currentuser currentschemas currentprofiles currentroles enabledroles defaultroles
currentqueryid queryid initialqueryid initialquerystarttime hostname fqdn version uptime
revision buildid serveruuid tcpport displayname shardnum shardcount getoskernelversion
zookeepersessionuptime globalvariable transactionid transactionlatestsnapshot
transactionoldestsnapshot getclienthttpheader catboostevaluate modelevaluate sleep sleepeachrow
joinget joingetornull hascolumnintable filesystemavailable filesystemcapacity filesystemunreserved
filesystemfree identity throwif evalmlmethod getsubcolumn
""".split())
_CH_DENIED_PREFIXES = ("dict", "joinget", "getsetting", "filesystem", "s3", "hdfs", "remote", "azure",
                       "mysql", "postgres", "transaction", "zookeeper", "getserver", "file",
                       "url", "system")


def _clickhouse_check(storage: Storage, prepared: PreparedSQL) -> None:
    """ClickHouse's own parse of the translated user part must name only the built-in tables and the
    query's CTEs, call no table function and none of :data:`_CH_DENIED`."""
    text = getattr(prepared, "user_sql", None) or prepared.sql
    try:
        rows = storage.execute("EXPLAIN AST " + text).rows
    except Exception as exc:  # noqa: BLE001 - the engine could not parse the translation
        raise _reject(f"The query could not be translated for ClickHouse: {_short(exc)[:300]}",
                      "sql_unsupported") from None
    lines = [str(r[0]) for r in rows]
    if not lines or not lines[0].startswith(("SelectWithUnionQuery", "SelectIntersectExceptQuery")):
        raise _reject("Only read-only queries are allowed.", "sql_statement_not_allowed")
    allowed = RESERVED | {c.lower() for c in prepared.ctes}
    stack: list[tuple[int, str]] = []
    for line in lines:
        depth = len(line) - len(line.lstrip(" "))
        node = line.strip()
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        stack.append((depth, node))
        kind, _, rest = node.partition(" ")
        name = rest.split(" ", 1)[0] if rest else ""
        if kind == "TableIdentifier":
            if "." in name or name.lower() not in allowed:
                raise _reject(f"There is no table `{name[:80]}` here. Tables you can query: {_names_list()}.",
                              "sql_table_not_allowed")
        elif kind == "Function":
            lower = name.lower()
            if parent.startswith("TableExpression"):
                raise _reject(f"The table function `{lower}` is not allowed.", "sql_table_function_not_allowed")
            if lower in _CH_DENIED or lower.startswith(_CH_DENIED_PREFIXES):
                raise _reject(f"The function `{lower}` is not allowed in queries.", "sql_function_not_allowed")
        elif kind in ("Set", "SetQuery", "Settings", "QueryParameter", "InsertQuery", "CreateQuery", "AlterQuery",
                      "DropQuery", "SystemQuery", "ExplainQuery"):
            raise _reject(f"`{kind}` cannot be used in queries.", "sql_statement_not_allowed")


# -- running --------------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if -(2 ** 63) <= value < 2 ** 64 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None and value.utcoffset() == _dt.timedelta(0):
            return value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")
        return value.isoformat()
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    return str(value)


def run_sql(storage: Storage, project_id: int, query: str, *, timeout_s: float = 30,
            max_rows: int = 10_000, default_limit: int = 100, timezone: str = "UTC") -> SQLResult:
    """Run a user's read-only SQL over one project's data (see the module docstring).

    Raises :class:`SQLRejected` (an :class:`~sightline.errors.InvalidInput`, HTTP 400; 408 with
    code ``query_timeout``) when the query is refused, fails or runs too long.
    """
    engine = getattr(storage, "dialect", "duckdb")
    if engine not in ("duckdb", "clickhouse"):
        raise _reject(f"SQL queries are not available with the {engine} store.", "sql_unsupported")
    prepared = prepare_sql(query, catalog=_catalog_names(storage), default_limit=default_limit,
                           max_rows=max_rows, engine=engine)
    extra: dict[str, Any] = {}
    if engine == "duckdb":
        _duckdb_check(storage, prepared)
    else:
        _clickhouse_check(storage, prepared)
        extra["readonly"] = 1  # reads only, and no setting can be changed by the query
    try:
        params = {PROJECT_PARAM: int(project_id)} if prepared.tables else None
        res = storage.query(prepared.sql, params, timeout_s=timeout_s,
                            max_rows=prepared.row_limit + 1, timezone=timezone, **extra)
    except QueryTimeout:
        raise _reject(f"The query ran longer than the {timeout_s:g} s limit and was stopped. "
                      f"Narrow it down (a time range, fewer joins) or aggregate more.",
                      "query_timeout", status=408) from None
    except QueryError as exc:
        raise _reject(f"The query failed: {str(exc)[:1000]}", "sql_error") from None
    rows = res.rows
    truncated = len(rows) > prepared.row_limit
    rows = rows[:prepared.row_limit]
    return SQLResult(columns=list(res.columns), types=list(res.types or []),
                     results=[[_jsonable(v) for v in row] for row in rows], truncated=truncated,
                     sql=prepared.sql)


__all__ = ["SQLRejected", "SQLResult", "PreparedSQL", "run_sql", "prepare_sql", "TABLES",
           "FUNCTIONS", "TABLE_FUNCTIONS", "EVENT_COLUMNS"]
