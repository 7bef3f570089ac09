{{/* Names, labels and the small derived facts every template shares. */}}

{{- define "reranker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or just <release> when it already contains the chart name; 63 characters at most. */}}
{{- define "reranker.fullname" -}}
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

{{- define "reranker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: name and instance only, so they never change across upgrades. */}}
{{- define "reranker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "reranker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "reranker.labels" -}}
helm.sh/chart: {{ include "reranker.chart" . }}
{{ include "reranker.selectorLabels" . }}
app.kubernetes.io/version: {{ include "reranker.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: product-rerank
{{- end }}

{{- define "reranker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "reranker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image: the digest wins over the tag; the tag defaults to appVersion, never `latest`. */}}
{{- define "reranker.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "reranker.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "reranker.imageTag" .) }}
{{- end }}
{{- end }}

{{/* API keys: the Secret that holds the keys file, its key, and where the file is mounted. */}}
{{- define "reranker.keysMountDir" -}}/etc/rerank/keys{{- end }}
{{- define "reranker.keysFile" -}}{{ include "reranker.keysMountDir" . }}/keys{{- end }}

{{- define "reranker.keysSecretName" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "reranker.fullname" .)) }}
{{- end }}

{{- define "reranker.keysSecretKey" -}}
{{- if .Values.apiKeys.existingSecret }}{{ .Values.apiKeys.existingSecretKey }}{{ else }}keys{{ end }}
{{- end }}

{{/* "true" when the chart makes up a key because none was given. */}}
{{- define "reranker.generateKey" -}}
{{- if and .Values.apiKeys.generate (not .Values.apiKeys.existingSecret) (not .Values.apiKeys.lines) }}true{{ end }}
{{- end }}

{{- define "reranker.generatedKeySecretName" -}}
{{- printf "%s-generated-key" (include "reranker.fullname" .) }}
{{- end }}

{{/*
The generated raw key: reused from the cluster when the Secret already exists (so upgrades keep it), else
256 bits from a CSPRNG. Computed once per render and remembered, so the keys Secret, the raw-key Secret and
the checksum annotation all agree whatever order Helm renders them in.
*/}}
{{- define "reranker.generatedKey" -}}
{{- if not (hasKey .Values "__generatedApiKey") }}
{{- $raw := printf "rk_%s" (randAlphaNum 43) }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "reranker.generatedKeySecretName" .) }}
{{- if and $existing $existing.data }}
{{- if hasKey $existing.data "key" }}
{{- $raw = index $existing.data "key" | b64dec }}
{{- end }}
{{- end }}
{{- $_ := set .Values "__generatedApiKey" $raw }}
{{- end }}
{{- index .Values "__generatedApiKey" }}
{{- end }}

{{/* The keys file the chart's Secret holds. */}}
{{- define "reranker.keysFileContent" -}}
# Managed by Helm release {{ .Release.Name }}: "<key-id> sha256:<hex> [limits]" per line.
{{- if include "reranker.generateKey" . }}
helm-generated sha256:{{ include "reranker.generatedKey" . | sha256sum }}
{{- end }}
{{- range .Values.apiKeys.lines }}
{{ . }}
{{- end }}
{{ end }}

{{/* Redis: configured when a URL or an existing Secret is given. */}}
{{- define "reranker.redisEnabled" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret }}true{{ end }}
{{- end }}

{{- define "reranker.redisSecretName" -}}
{{- .Values.redis.existingSecret | default (printf "%s-redis" (include "reranker.fullname" .)) }}
{{- end }}

{{- define "reranker.redisSecretKey" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}url{{ end }}
{{- end }}

{{/* Seconds the startup probe allows for model load; the entrypoint waits for vLLM as long. */}}
{{- define "reranker.startupBudgetSeconds" -}}
{{- mul (int .Values.startupProbe.failureThreshold) (int .Values.startupProbe.periodSeconds) }}
{{- end }}

{{/* The `helm test` pod: its own name label, so neither the Service nor the NetworkPolicy selects it. */}}
{{- define "reranker.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "reranker.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The Service Prometheus scrapes: its own, so the API Service (and the Ingress) never expose /metrics. */}}
{{- define "reranker.metricsServiceName" -}}
{{- printf "%s-metrics" (include "reranker.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/* The served name: model.servedModelName, else qwen3-reranker-<model.size> (model_setup/naming.py's rule for
the size's repository); empty when neither is set, and the entrypoint names the model after its snapshot. */}}
{{- define "reranker.servedModelName" -}}
{{- if .Values.model.servedModelName }}{{ .Values.model.servedModelName }}
{{- else if .Values.model.size }}{{ printf "qwen3-reranker-%s" .Values.model.size }}
{{- end }}
{{- end }}

{{/* The fleet (fleet.models non-empty): its ConfigMap, and where its file is mounted (RERANK_FLEET_FILE). */}}
{{- define "reranker.fleetConfigMapName" -}}
{{- printf "%s-fleet" (include "reranker.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}
{{- define "reranker.fleetMountDir" -}}/etc/rerank/fleet{{- end }}
{{- define "reranker.fleetFile" -}}{{ include "reranker.fleetMountDir" . }}/fleet.toml{{- end }}

{{/*
The fleet file in model_setup/fleet.py's format. Strings and string lists go through toJson: a JSON string is
a TOML basic string (same escapes) and a JSON list of strings a TOML array. A setting left out (or null) is
left out of the file, so the model gets the pod's RERANK_* default; quantization "" is kept (none for this
model). GPU shares only in GPU mode: vLLM's CPU build has no use for them.
*/}}
{{- define "reranker.fleetToml" -}}
# Rendered by Helm from the release's fleet values (docs/fleet.md).
{{- with .Values.fleet.default }}
default = {{ toJson . }}
{{- end }}
{{- $cuda := eq .Values.device "cuda" }}
{{- range .Values.fleet.models }}

[[models]]
name = {{ toJson .name }}
{{- with .aliases }}
aliases = {{ toJson . }}
{{- end }}
model_dir = {{ toJson .dir }}
{{- with .upstreamUrl }}
upstream_url = {{ toJson . }}
{{- end }}
{{- if and $cuda (not (kindIs "invalid" .gpuMemoryUtilization)) }}
gpu_memory_utilization = {{ .gpuMemoryUtilization | float64 }}
{{- end }}
{{- with .dtype }}
dtype = {{ toJson . }}
{{- end }}
{{- if not (kindIs "invalid" .quantization) }}
quantization = {{ toJson .quantization }}
{{- end }}
{{- if not (kindIs "invalid" .maxModelLen) }}
max_model_len = {{ .maxModelLen | int }}
{{- end }}
{{- if not (kindIs "invalid" .maxPairsInFlight) }}
max_pairs_in_flight = {{ .maxPairsInFlight | int }}
{{- end }}
{{- end }}
{{- range .Values.fleet.cascades }}

[[cascades]]
name = {{ toJson .name }}
{{- with .aliases }}
aliases = {{ toJson . }}
{{- end }}
first = {{ toJson .first }}
second = {{ toJson .second }}
{{- if not (kindIs "invalid" .topK) }}
top_k = {{ .topK | int }}
{{- end }}
{{- if not (kindIs "invalid" .maxTopK) }}
max_top_k = {{ .maxTopK | int }}
{{- end }}
{{- end }}
{{ end }}

{{/* The TCP ports of the fleet's remote models (upstreamUrl), unique, for the NetworkPolicy: "8001 443". */}}
{{- define "reranker.fleetUpstreamPorts" -}}
{{- $ports := list }}
{{- range .Values.fleet.models }}
{{- with .upstreamUrl }}
{{- $url := urlParse . }}
{{- $port := regexFind ":[0-9]+$" $url.host | trimPrefix ":" | default (ternary "443" "80" (eq $url.scheme "https")) }}
{{- $ports = append $ports $port }}
{{- end }}
{{- end }}
{{- $ports | uniq | join " " }}
{{- end }}
