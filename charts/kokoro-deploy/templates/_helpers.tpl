{{/* Names, labels and the pieces every workload shares. */}}

{{- define "kd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* kd.selector: (dict "ctx" $ "component" "kokoro") */}}
{{- define "kd.selector" -}}
app.kubernetes.io/name: {{ include "kd.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kd.secretName" -}}
{{- default (printf "%s-keys" (include "kd.fullname" .)) .Values.apiKeys.existingSecret -}}
{{- end -}}

{{- define "kd.claimName" -}}
{{- default (printf "%s-models" (include "kd.fullname" .)) .Values.modelCache.existingClaim -}}
{{- end -}}

{{/* manifest.yml (files/manifest.yml links to the repository's), as data. */}}
{{- define "kd.manifest" -}}
{{- .Files.Get "files/manifest.yml" | fromYaml | toJson -}}
{{- end -}}

{{/* The Kokoro engine: onnx on CPU, torch on a GPU (compose.gpu.yml). */}}
{{- define "kd.engine" -}}
{{- if .Values.gpu.enabled }}torch{{ else }}onnx{{ end -}}
{{- end -}}

{{/* The pod-level security context: the image's own uid, never root. */}}
{{- define "kd.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* compose's read_only, cap_drop [ALL] and no-new-privileges, for one container. */}}
{{- define "kd.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
readOnlyRootFilesystem: {{ .readOnly }}
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Resources with the GPU limit: (dict "ctx" $ "svc" .Values.kokoro "gpu" true) */}}
{{- define "kd.resources" -}}
{{- $res := deepCopy .svc.resources -}}
{{- if .gpu -}}
{{- $name := default .ctx.Values.gpu.resourceName .svc.gpu.resourceName -}}
{{- $limits := default (dict) $res.limits -}}
{{- $_ := set $limits $name 1 -}}
{{- $_ := set $res "limits" $limits -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* Scheduling for a pod: (dict "ctx" $ "svc" .Values.kokoro "gpu" true) */}}
{{- define "kd.scheduling" -}}
{{- $g := .ctx.Values.gpu -}}
{{- if and .gpu $g.runtimeClassName }}
runtimeClassName: {{ $g.runtimeClassName }}
{{- end }}
{{- $ns := merge (deepCopy (default (dict) .svc.nodeSelector)) (ternary $g.nodeSelector (dict) .gpu) }}
{{- with $ns }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $tol := concat (default (list) .svc.tolerations) (ternary $g.tolerations (list) .gpu) }}
{{- with $tol }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
The init container that waits for a service's model files: tools/model_cache_job.py
--verify over the same plan, until the Job has put them in place.
(dict "ctx" $ "uid" 10001 "args" (list "--engines" "onnx" ...))
*/}}
{{- define "kd.waitForModels" -}}
- name: wait-for-models
  image: {{ include "kd.kokoroImage" .ctx }}
  imagePullPolicy: {{ .ctx.Values.kokoro.image.pullPolicy }}
  command: [python3, /opt/kit/tools/model_cache_job.py, --verify,
            --manifest, /opt/kit/manifest.yml, --lock, /opt/kit/lock.yml, --dir, /models]
  args: {{ toJson .args }}
  env:
    # No GPU for this container, whatever the node's default runtime hands out.
    - {name: NVIDIA_VISIBLE_DEVICES, value: void}
  securityContext:
    {{- include "kd.containerSecurityContext" (dict "uid" .uid "readOnly" true) | nindent 4 }}
  resources:
    {{- toYaml .ctx.Values.modelCache.job.resources | nindent 4 }}
  volumeMounts:
    - {name: models, mountPath: /models, readOnly: true}
    - {name: kit, mountPath: /opt/kit, readOnly: true}
    - {name: tmp, mountPath: /tmp}
{{- end -}}

{{- define "kd.kokoroImage" -}}
{{- $i := .Values.kokoro.image -}}
{{- printf "%s:%s" $i.repository (ternary $i.gpuTag $i.cpuTag .Values.gpu.enabled) -}}
{{- end -}}

{{/* The kit volume: the fetch script and its modules in the repository's layout. */}}
{{- define "kd.kitVolume" -}}
- name: kit
  configMap:
    name: {{ include "kd.fullname" . }}-model-kit
    items:
      - {key: model_cache_job.py, path: tools/model_cache_job.py}
      - {key: model_cache_fetch.py, path: ansible/collections/ansible_collections/kokoro/deploy/plugins/modules/model_cache_fetch.py}
      - {key: model_cache_plan.py, path: ansible/collections/ansible_collections/kokoro/deploy/plugins/module_utils/model_cache_plan.py}
      - {key: model_cache_lock.py, path: ansible/collections/ansible_collections/kokoro/deploy/plugins/module_utils/model_cache_lock.py}
      - {key: manifest.yml, path: manifest.yml}
      - {key: lock.yml, path: lock.yml}
{{- end -}}

{{/* The plan's arguments for the Kokoro files. */}}
{{- define "kd.kokoroPlanArgs" -}}
{{- toJson (list "--engines" (include "kd.engine" .) "--voices" (join "," .Values.modelCache.voices) "--extra-groups" (join "," .Values.modelCache.extraGroups)) -}}
{{- end -}}

{{/* KOKORO_QUOTA_OVERRIDES from kokoro.quota: name:requests_per_minute:audio_seconds_per_day,
     a field an override leaves out taking the chart-wide value (roles/stack does the same). */}}
{{- define "kd.quotaOverrides" -}}
{{- $q := . -}}
{{- $out := list -}}
{{- range $name := keys $q.overrides | sortAlpha -}}
{{- $o := get $q.overrides $name -}}
{{- $out = append $out (printf "%s:%v:%v" $name (dig "requestsPerMinute" $q.requestsPerMinute $o) (dig "audioSecondsPerDay" $q.audioSecondsPerDay $o)) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}
