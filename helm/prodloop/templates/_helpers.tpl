{{/* Names and labels. */}}
{{- define "prodloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "prodloop.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "prodloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prodloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "prodloop.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "prodloop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: prodloop
{{- end }}

{{- define "prodloop.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The secret settings: environment variable -> the values entry ({existingSecret, key, value}).
One list, used by the Deployment, the chart-managed Secret and the checks below.
*/}}
{{- define "prodloop.secretSettings" -}}
{{- $v := .Values -}}
{{- $s := dict
  "PRODLOOP_STORE__PASSWORD" $v.store.password
  "PRODLOOP_KAFKA__SASL_PASSWORD" $v.kafka.sasl_password
  "PRODLOOP_RECEIVER__BEARER_TOKEN" $v.receiver.bearer_token
  "PRODLOOP_RECEIVER__GITHUB_WEBHOOK_SECRET" $v.receiver.github_webhook_secret
  "PRODLOOP_SERVICE__METRICS_BEARER_TOKEN" $v.service.metrics_bearer_token
  "PRODLOOP_ALERTS__GITHUB__TOKEN" $v.alerts.github.token
  "PRODLOOP_ALERTS__JIRA__API_TOKEN" $v.alerts.jira.api_token
  "PRODLOOP_ALERTS__WEBHOOK__SECRET" $v.alerts.webhook.secret
-}}
{{- toJson $s -}}
{{- end }}

{{/* True (non-empty) when some secret setting has an inline value: the chart then owns a Secret. */}}
{{- define "prodloop.hasInlineSecrets" -}}
{{- range $env, $s := (include "prodloop.secretSettings" . | fromJson) }}
{{- if $s.value }}yes{{ end }}
{{- end }}
{{- end }}

{{/* env entries for one secret setting (nothing when it is unset). */}}
{{- define "prodloop.secretEnvEntry" -}}
{{- $env := index . 0 -}}
{{- $s := index . 1 -}}
{{- $chartSecret := index . 2 -}}
{{- if $s.existingSecret }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $s.existingSecret }}
      key: {{ required (printf "%s: key is required with existingSecret" $env) $s.key }}
{{- else if $s.value }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $chartSecret }}
      key: {{ required (printf "%s: key is required" $env) $s.key }}
{{- end }}
{{- end }}

{{/*
prodloop.yaml: the settings sections of the values, without the secret entries (those come
from Secrets as environment variables), with the mounted files filled in.
*/}}
{{- define "prodloop.config" -}}
{{- $v := .Values -}}
{{- $store := omit $v.store "password" -}}
{{- $attribution := deepCopy $v.attribution -}}
{{- if and $v.files.codeowners (not $attribution.codeowners) }}{{ $_ := set $attribution "codeowners" "/etc/prodloop/CODEOWNERS" }}{{ end -}}
{{- if and $v.files.modules (not $attribution.modules) }}{{ $_ := set $attribution "modules" "/etc/prodloop/modules.yaml" }}{{ end -}}
{{- if and $v.files.attribution (not $attribution.config) }}{{ $_ := set $attribution "config" "/etc/prodloop/attribution.yaml" }}{{ end -}}
{{- $kafka := omit $v.kafka "sasl_password" -}}
{{- $receiver := omit $v.receiver "bearer_token" "github_webhook_secret" "walSize" "walStorageClass" -}}
{{- $service := omit $v.service "metrics_bearer_token" -}}
{{- $alerts := omit $v.alerts "github" "jira" "webhook" -}}
{{- if and $v.files.rules (not $alerts.rules) }}{{ $_ := set $alerts "rules" "/etc/prodloop/rules.yaml" }}{{ end -}}
{{- $_ := set $alerts "github" (omit $v.alerts.github "token") -}}
{{- $_ := set $alerts "jira" (omit $v.alerts.jira "api_token") -}}
{{- $_ := set $alerts "webhook" (omit $v.alerts.webhook "secret") -}}
{{- $history := omit $v.history "cronjob" "gitTokenSecret" -}}
{{- if $v.history.cronjob.enabled }}{{ $_ := set $history "scan_interval_seconds" 0 }}{{ end -}}
{{- $cfg := dict
  "store" $store
  "attribution" $attribution
  "aggregation" $v.aggregation
  "kafka" $kafka
  "stream" $v.stream
  "service" $service
  "receiver" $receiver
  "alerts" $alerts
  "cost" $v.cost
  "history" $history
-}}
{{- toYaml $cfg -}}
{{- end }}

{{/* Fail early on settings that cannot work in a cluster. */}}
{{- define "prodloop.validate" -}}
{{- $server := or (hasPrefix "http://" .Values.store.dsn) (hasPrefix "https://" .Values.store.dsn) -}}
{{- if and (gt (int .Values.replicaCount) 1) (not $server) -}}
{{- fail "replicaCount > 1 needs a ClickHouse server: set store.dsn to http(s)://HOST:8123 (the embedded store belongs to one process)" -}}
{{- end -}}
{{- if and .Values.history.cronjob.enabled (not $server) -}}
{{- fail "history.cronjob.enabled needs a ClickHouse server: set store.dsn to http(s)://HOST:8123 (the embedded store belongs to the running pod)" -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) .Values.persistence.enabled -}}
{{- fail "persistence.enabled is for the embedded store of a single replica; with a ClickHouse server use replicaCount > 1 without persistence" -}}
{{- end -}}
{{- if and .Values.kafka.sasl_mechanism (not (hasPrefix "SASL_" .Values.kafka.security_protocol)) -}}
{{- fail "kafka.sasl_mechanism is set but kafka.security_protocol is not SASL_SSL or SASL_PLAINTEXT" -}}
{{- end -}}
{{- if and (hasPrefix "SASL_" .Values.kafka.security_protocol) (not .Values.kafka.sasl_mechanism) -}}
{{- fail "kafka.security_protocol SASL_* needs kafka.sasl_mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)" -}}
{{- end -}}
{{- if and (hasPrefix "SASL_" .Values.kafka.security_protocol) (not (or .Values.kafka.sasl_password.existingSecret .Values.kafka.sasl_password.value)) -}}
{{- fail "kafka.security_protocol SASL_* needs kafka.sasl_password (existingSecret + key, or value)" -}}
{{- end -}}
{{- if and .Values.kafka.group_instance_id (gt (int .Values.replicaCount) 1) -}}
{{- fail "kafka.group_instance_id is set, so every replica would have the same id (the broker fences all but one): leave it empty, and each pod uses its name (kafkaStaticMembership)" -}}
{{- end -}}
{{- if and .Values.service.metrics_tls_cert_file (not .Values.service.metrics_tls_key_file) -}}
{{- fail "service.metrics_tls_cert_file needs service.metrics_tls_key_file" -}}
{{- end -}}
{{- if and .Values.service.metrics_tls_key_file (not .Values.service.metrics_tls_cert_file) -}}
{{- fail "service.metrics_tls_key_file needs service.metrics_tls_cert_file" -}}
{{- end -}}
{{- if not (has (.Values.service.metrics_host | toString) (list "0.0.0.0" "::")) -}}
{{- fail "service.metrics_host must be 0.0.0.0 (or ::) in a pod: the kubelet probes /healthz and /readyz on the pod IP" -}}
{{- end -}}
{{- end }}

{{/* A probe from the values; with the metrics TLS files set, its httpGet uses HTTPS. */}}
{{- define "prodloop.probe" -}}
{{- $probe := deepCopy (index . 0) -}}
{{- $tls := index . 1 -}}
{{- if and $tls $probe.httpGet (not $probe.httpGet.scheme) }}{{ $_ := set $probe.httpGet "scheme" "HTTPS" }}{{ end -}}
{{- toYaml $probe -}}
{{- end }}

{{/* The Secret holding service.metrics_bearer_token (yours, or the chart's), for the ServiceMonitor. */}}
{{- define "prodloop.metricsTokenSecret" -}}
{{- $s := .Values.service.metrics_bearer_token -}}
{{- if $s.existingSecret }}{{ $s.existingSecret }}{{ else if $s.value }}{{ include "prodloop.fullname" . }}{{ end -}}
{{- end }}

{{/*
"yes" when the pods keep a write-ahead log: direct mode (no Kafka) with receiver.durability
wal.  The chart then runs a StatefulSet, each pod with its own volume claim for the log.
*/}}
{{- define "prodloop.wal" -}}
{{- if and (not .Values.kafka.bootstrap_servers) (eq .Values.receiver.durability "wal") }}yes{{ end -}}
{{- end }}

{{/* The write-ahead log's directory in the container (its volume's mount path): receiver.wal_dir
under the working directory, or /var/lib/prodloop-wal. */}}
{{- define "prodloop.walDir" -}}
{{- $dir := default "/var/lib/prodloop-wal" .Values.receiver.wal_dir -}}
{{- if hasPrefix "/" $dir }}{{ clean $dir }}{{ else }}{{ clean (printf "/var/lib/prodloop/%s" $dir) }}{{ end -}}
{{- end }}
