{{/*
Combinations values.schema.json cannot express and that would deploy something broken: fail the render and
say why and what to set. Included once, from deployment.yaml.
*/}}
{{- define "reranker.checks" -}}
{{- $gpuName := .Values.gpu.resourceName }}
{{- $resources := .Values.resources | default dict }}
{{- $requests := $resources.requests | default dict }}
{{- $limits := $resources.limits | default dict }}

{{- if or (hasKey $requests $gpuName) (hasKey $limits $gpuName) }}
{{- fail (printf "resources must not list %s: set gpu.count (GPUs per pod) and the chart puts it into both requests and limits" $gpuName) }}
{{- end }}
{{- if eq .Values.device "cuda" }}
{{- if lt (int (.Values.gpu.count | default 0)) 1 }}
{{- fail (printf "GPU mode (device=cuda) needs GPU resources: set gpu.count to the GPUs per pod (1 for Qwen3-Reranker-4B) so the pod requests and is scheduled onto %s, or set device=cpu" $gpuName) }}
{{- end }}
{{- end }}
{{- if not (and $requests.cpu $requests.memory $limits.memory) }}
{{- fail "resources are required: set resources.requests.cpu, resources.requests.memory and resources.limits.memory (the model needs tens of GiB of host memory; an unbounded pod can starve its node)" }}
{{- end }}

{{- if not (include "reranker.redisEnabled" .) }}
{{- $why := "" }}
{{- if .Values.autoscaling.enabled }}{{ $why = "autoscaling.enabled=true" }}
{{- else if gt (int .Values.replicaCount) 1 }}{{ $why = printf "replicaCount=%d" (int .Values.replicaCount) }}
{{- else if gt (int .Values.gateway.workers) 1 }}{{ $why = printf "gateway.workers=%d" (int .Values.gateway.workers) }}
{{- end }}
{{- if $why }}
{{- fail (printf "%s needs Redis for rate limits: without it every pod and worker counts requests on its own, so each API key would get its limits several times over. Set redis.url or redis.existingSecret (shared counters), or run one replica with one worker" $why) }}
{{- end }}
{{- end }}
{{- if .Values.redis.url }}
{{- $port := regexFind ":[0-9]+$" (urlParse .Values.redis.url).host | trimPrefix ":" }}
{{- if and $port (ne $port (toString (int .Values.redis.port))) }}
{{- fail (printf "redis.url uses port %s but redis.port (opened by the NetworkPolicy) is %d: make them agree" $port (int .Values.redis.port)) }}
{{- end }}
{{- end }}

{{- if not (or .Values.apiKeys.lines .Values.apiKeys.existingSecret .Values.apiKeys.generate) }}
{{- fail "no API keys: set apiKeys.lines (keys-file lines from `python -m gateway keygen <key-id>`), apiKeys.existingSecret, or apiKeys.generate=true" }}
{{- end }}
{{- if and .Values.apiKeys.lines .Values.apiKeys.existingSecret }}
{{- fail "give either apiKeys.lines or apiKeys.existingSecret, not both" }}
{{- end }}
{{- if and (gt (int .Values.scoreCache.redisTtlSeconds) 0) (not (include "reranker.redisEnabled" .)) }}
{{- fail "scoreCache.redisTtlSeconds turns on the shared score-cache tier, which lives in Redis: set redis.url or redis.existingSecret, or set it to 0" }}
{{- end }}

{{- if and .Values.model.volume (not .Values.model.dir) }}
{{- fail "model.volume is set but model.dir is empty: set model.dir to the snapshot path the volume is mounted at" }}
{{- end }}

{{- $drain := add (int .Values.preStopSleepSeconds) (int .Values.drainTimeoutSeconds) }}
{{- if ge $drain (int .Values.terminationGracePeriodSeconds) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + drainTimeoutSeconds (%d): otherwise the kubelet kills the pod while requests are still draining" (int .Values.terminationGracePeriodSeconds) $drain) }}
{{- end }}

{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}

{{- if .Values.metrics.enabled }}
{{- if eq (int .Values.metrics.port) 8000 }}
{{- fail "metrics.port must differ from 8000, the API port: metrics have a port of their own so the API never serves them" }}
{{- end }}
{{- else }}
{{- $needs := list }}
{{- if .Values.serviceMonitor.enabled }}{{ $needs = append $needs "serviceMonitor.enabled=true (it scrapes the metrics port)" }}{{ end }}
{{- if .Values.grafanaDashboard.enabled }}{{ $needs = append $needs "grafanaDashboard.enabled=true (it shows the scraped metrics)" }}{{ end }}
{{- if and .Values.autoscaling.enabled .Values.autoscaling.waitingRequests.enabled }}{{ $needs = append $needs "autoscaling.waitingRequests.enabled=true (the HPA's metric comes from the scrape)" }}{{ end }}
{{- if $needs }}
{{- fail (printf "%s needs metrics.enabled=true: metrics.enabled=false turns the metrics port off, so there would be nothing to scrape. Turn metrics on or turn these off" (join " and " $needs)) }}
{{- end }}
{{- end }}
{{- end }}
