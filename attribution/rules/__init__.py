"""Alert rules, pure: the ``rules.yaml`` model, its validation, and the evaluation of each kind.

The adapters (``collector/app/rules_file.py`` reads the file, ``collector/pipelines/alerts.py`` the aggregates) pass them in;
nothing here reads a file, the store or the clock.  See ``docs/rules.md`` for the format.
Importers import each name from the module that owns it:

* :mod:`~attribution.rules.values` - units, metric names, durations, fractions and rates;
* :mod:`~attribution.rules.schema` - the rule types; :mod:`~attribution.rules.errors` - a file's problems;
* :mod:`~attribution.rules.parse` (and :mod:`~attribution.rules.params`) - plain dicts to a rule set;
* :mod:`~attribution.rules.inputs` - what rules are evaluated over; :mod:`~attribution.rules.findings` -
  what evaluation yields;
* :mod:`~attribution.rules.evaluate` - one rule at an instant, over the per-kind
  :mod:`~attribution.rules.evaluators`.

Evaluation is *stateless*: a rule is evaluated at evaluation instants ``t`` spaced ``every``
apart, each over complete aggregation windows ``[t - window, t)``.  A finding *fires* when
the breach holds at every instant over at least ``for`` (like Prometheus' ``for``, but
recomputed from the aggregates, so a restart, a replica change or a dry run gives the same
answer), and it has *recovered* when it is clear at every instant over the ticket's
``recover_after``.  Too few samples is neither a breach nor clear (``no_data``).

Kinds (see :data:`attribution.rules.schema.KINDS`):

* ``threshold`` - p50/p95/p99 latency or self time, error rate, own error rate or span rate
  above or below a value;
* ``regression_after_deploy`` - per live deploy, a module's metrics over the same length of
  time before and after it; fires when the relative change exceeds a threshold **and** a
  one-sided test (:mod:`attribution.stats`) is significant;
* ``cost_share`` - the module's share of its service's resources divided by its share of
  the service's traffic.  The resource is a named measure
  (:data:`attribution.rules.schema.RESOURCE_MEASURES`): ``self_time`` (the default),
  ``span_duration`` or ``cpu_time``; a cost model would be a new name, not a new file format;
* ``incident_recurrence`` - at least N incidents naming the module (or service) within the
  window;
* ``unused`` - a module declared in ``modules.yaml`` that saw no spans over the window.
"""
