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
{{- include "reranker.fleetChecks" . }}

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

{{/*
The fleet (fleet.*): what model_setup/fleet.py and the gateway would refuse at start-up, refused at render
time instead, where the values are. The schema has checked each entry's shape.
*/}}
{{- define "reranker.fleetChecks" -}}
{{- $fleet := .Values.fleet }}
{{- if not $fleet.models }}
{{- if or $fleet.cascades $fleet.default }}
{{- fail "fleet.cascades and fleet.default need fleet.models: declare the models the fleet serves" }}
{{- end }}
{{- else }}
{{- range $key, $value := dict "model.dir" .Values.model.dir "model.volume" .Values.model.volume "model.servedModelName" .Values.model.servedModelName }}
{{- if $value }}
{{- fail (printf "%s is for the single model; with fleet.models it would be ignored: give each model its name, dir and volume in fleet.models and unset %s" $key $key) }}
{{- end }}
{{- end }}

{{- /* Every name and alias once across models and cascades (model.aliases name the default and so count). */}}
{{- $owner := dict }}
{{- $models := dict }}
{{- range $i, $model := $fleet.models }}
{{- if not $model.dir }}
{{- if $model.volume }}
{{- fail (printf "fleet.models[%d] (%s) has a volume but no dir: set dir to the snapshot path the volume is mounted at" $i $model.name) }}
{{- end }}
{{- fail (printf "fleet.models[%d] (%s) has no dir: set it to the snapshot's path in the container (it holds at least tokenizer.json and config.json), from its volume or the image" $i $model.name) }}
{{- end }}
{{- $_ := set $models $model.name true }}
{{- range prepend ($model.aliases | default list) $model.name }}
{{- if hasKey $owner . }}
{{- fail (printf "fleet.models[%d] (%s): the name %q is already a name or alias of %s; every name and alias may be used once" $i $model.name . (get $owner .)) }}
{{- end }}
{{- $_ := set $owner . (printf "model %s" $model.name) }}
{{- end }}
{{- if and $model.upstreamUrl (not (kindIs "invalid" $model.gpuMemoryUtilization)) }}
{{- fail (printf "fleet.models[%d] (%s) has an upstreamUrl, so it runs elsewhere and takes none of this pod's GPU: unset its gpuMemoryUtilization" $i $model.name) }}
{{- end }}
{{- end }}
{{- range $i, $cascade := $fleet.cascades | default list }}
{{- range list "first" "second" }}
{{- if not (hasKey $models (get $cascade .)) }}
{{- fail (printf "fleet.cascades[%d] (%s): %s is %q, which is no model's name in fleet.models (%s); a cascade names its models by name, not alias" $i $cascade.name . (get $cascade .) (keys $models | sortAlpha | join ", ")) }}
{{- end }}
{{- end }}
{{- if eq $cascade.first $cascade.second }}
{{- fail (printf "fleet.cascades[%d] (%s): first and second are both %s; a cascade needs two different models" $i $cascade.name $cascade.first) }}
{{- end }}
{{- $topK := $cascade.topK | default 50 | int }}
{{- if and (not (kindIs "invalid" $cascade.maxTopK)) (lt (int $cascade.maxTopK) $topK) }}
{{- fail (printf "fleet.cascades[%d] (%s): maxTopK (%d) is below topK (%d)" $i $cascade.name (int $cascade.maxTopK) $topK) }}
{{- end }}
{{- range prepend ($cascade.aliases | default list) $cascade.name }}
{{- if hasKey $owner . }}
{{- fail (printf "fleet.cascades[%d] (%s): the name %q is already a name or alias of %s; every name and alias may be used once" $i $cascade.name . (get $owner .)) }}
{{- end }}
{{- $_ := set $owner . (printf "cascade %s" $cascade.name) }}
{{- end }}
{{- end }}
{{- range .Values.model.aliases }}
{{- if hasKey $owner . }}
{{- fail (printf "model.aliases has %q, already a name or alias of %s: with a fleet, model.aliases are more names for the fleet's default, so each must be new" . (get $owner .)) }}
{{- end }}
{{- end }}
{{- if and $fleet.default (not (hasKey $owner $fleet.default)) }}
{{- fail (printf "fleet.default is %q, which is no name or alias in fleet.models or fleet.cascades" $fleet.default) }}
{{- end }}

{{- /* Two volumes at one path make an invalid pod; the chart's own mounts come first. */}}
{{- $mounts := dict "/tmp" "the chart's tmp emptyDir" "/var/cache/rerank" "the chart's cache emptyDir" "/dev/shm" "the chart's shm emptyDir" }}
{{- $_ := set $mounts (include "reranker.keysMountDir" .) "the API keys file" }}
{{- $_ := set $mounts (include "reranker.fleetMountDir" .) "the fleet file" }}
{{- range $i, $model := $fleet.models }}
{{- if $model.volume }}
{{- $dir := $model.dir | trimSuffix "/" }}
{{- if hasKey $mounts $dir }}
{{- fail (printf "fleet.models[%d] (%s) mounts its volume at %s, which %s already uses: give each volume a dir of its own" $i $model.name $model.dir (get $mounts $dir)) }}
{{- end }}
{{- $_ := set $mounts $dir (printf "model %s's volume" $model.name) }}
{{- end }}
{{- end }}

{{- /* The local vLLMs share the pod's GPU: the shares given must fit model.gpuMemoryUtilization, and the
models without one split what is left equally, rounded down to 0.01 (model_setup/fleet.py's rule). */}}
{{- if eq .Values.device "cuda" }}
{{- $budget := .Values.model.gpuMemoryUtilization | float64 }}
{{- $given := 0.0 }}
{{- $unset := 0 }}
{{- $parts := list }}
{{- range $fleet.models }}
{{- if not .upstreamUrl }}
{{- if kindIs "invalid" .gpuMemoryUtilization }}
{{- $unset = add1 $unset }}
{{- else }}
{{- $given = addf $given (.gpuMemoryUtilization | float64) }}
{{- $parts = append $parts (printf "%s %g" .name (.gpuMemoryUtilization | float64)) }}
{{- end }}
{{- end }}
{{- end }}
{{- $advice := "lower fleet.models[].gpuMemoryUtilization, or serve a model from its own release (docs/fleet.md, On Kubernetes)" }}
{{- if gt $given (addf $budget 0.000000001) }}
{{- fail (printf "the local models' GPU shares add up to %.2f (%s), more than model.gpuMemoryUtilization=%.2f, the GPU memory all of this pod's vLLMs may take: %s" $given (join ", " $parts) $budget $advice) }}
{{- else if and (gt $unset 0) (lt (divf (floor (mulf (divf (subf $budget $given) $unset) 100)) 100) 0.01) }}
{{- fail (printf "the local models' GPU shares add up to %.2f (%s) and leave less than 0.01 of model.gpuMemoryUtilization=%.2f for each of the %d local models without one: %s" $given (join ", " $parts) $budget $unset $advice) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
