{{/* Names ------------------------------------------------------------------------------- */}}
{{- define "govmx.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Component name: (dict "root" $ "c" "synapse") */}}
{{- define "govmx.name" -}}
{{- printf "%s-%s" (include "govmx.fullname" .root) .c -}}
{{- end -}}

{{- define "govmx.selectorLabels" -}}
app.kubernetes.io/name: govmx
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .c }}
{{- end -}}

{{- define "govmx.labels" -}}
{{ include "govmx.selectorLabels" . }}
app.kubernetes.io/part-of: govmx
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* Image reference: (dict "root" $ "image" .Values.images.x). Always tag@digest; the global
     registry replaces each image's own registry (air-gapped mirrors). */}}
{{- define "govmx.image" -}}
{{- $registry := .root.Values.global.imageRegistry | default .image.registry -}}
{{- printf "%s/%s:%s@%s" $registry .image.repository .image.tag .image.digest -}}
{{- end -}}

{{/* Pod-level fields shared by every pod: (dict "root" $ "uid" 10991) */}}
{{- define "govmx.podSpecCommon" -}}
automountServiceAccountToken: false
serviceAccountName: {{ include "govmx.fullname" .root }}
enableServiceLinks: false
{{- with .root.Values.global.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .uid }}
  runAsGroup: {{ .uid }}
  fsGroup: {{ .uid }}
  fsGroupChangePolicy: OnRootMismatch
  seccompProfile:
    type: RuntimeDefault
{{- with .root.Values.global.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.global.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Container securityContext: Pod Security "restricted" plus a read-only root filesystem. */}}
{{- define "govmx.containerSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .uid }}
  runAsGroup: {{ .uid }}
  allowPrivilegeEscalation: false
  privileged: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* Topology spread for replicated workloads: (dict "root" $ "c" "gate") */}}
{{- define "govmx.topologySpread" -}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "govmx.selectorLabels" . | nindent 8 }}
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "govmx.selectorLabels" . | nindent 8 }}
{{- end -}}

{{/* HTTP probes on a govmx admin listener: (dict "port" "admin") */}}
{{- define "govmx.adminProbes" -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: {{ .port }}}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{- define "govmx.synapseSecretsName" -}}
{{- .Values.synapse.secrets.existingSecret | default (printf "%s-synapse-secrets" (include "govmx.fullname" .)) -}}
{{- end -}}
{{- define "govmx.synapseSigningKeyName" -}}
{{- .Values.synapse.signingKey.existingSecret | default (printf "%s-synapse-signing-key" (include "govmx.fullname" .)) -}}
{{- end -}}
{{- define "govmx.postgresSecretName" -}}
{{- .Values.postgresql.external.existingSecret | default (printf "%s-postgresql" (include "govmx.fullname" .)) -}}
{{- end -}}
{{- define "govmx.gateTlsName" -}}
{{- .Values.federationGate.tls.existingSecret | default (printf "%s-gate-tls" (include "govmx.fullname" .)) -}}
{{- end -}}
{{- define "govmx.policyConfigMapName" -}}
{{- .Values.policy.bundle.existingConfigMap | default (printf "%s-policy-bundle" (include "govmx.fullname" .)) -}}
{{- end -}}
{{- define "govmx.trustConfigMapName" -}}
{{- .Values.policy.trust.existingConfigMap | default (printf "%s-policy-trust" (include "govmx.fullname" .)) -}}
{{- end -}}

{{/* In-cluster URLs */}}
{{- define "govmx.synapseClientUrl" -}}
{{- printf "http://%s:8008" (include "govmx.name" (dict "root" . "c" "synapse")) -}}
{{- end -}}
{{- define "govmx.clamdAddress" -}}
{{- if .Values.clamav.enabled -}}
{{- printf "%s:3310" (include "govmx.name" (dict "root" . "c" "clamav")) -}}
{{- else -}}
{{- required "clamav.external.address is required when clamav.enabled is false" .Values.clamav.external.address -}}
{{- end -}}
{{- end -}}

{{/* PostgreSQL connection: the in-chart StatefulSet (postgresql.internal.enabled) or the external server. */}}
{{- define "govmx.postgresHost" -}}
{{- if .Values.postgresql.internal.enabled -}}
{{- include "govmx.name" (dict "root" . "c" "postgresql") -}}
{{- else -}}
{{- .Values.postgresql.external.host -}}
{{- end -}}
{{- end -}}
{{- define "govmx.postgresPort" -}}
{{- if .Values.postgresql.internal.enabled }}5432{{ else }}{{ .Values.postgresql.external.port }}{{ end -}}
{{- end -}}
{{/* The in-chart PostgreSQL has no TLS (staging; traffic confined by NetworkPolicy). */}}
{{- define "govmx.postgresSslmode" -}}
{{- if .Values.postgresql.internal.enabled }}disable{{ else }}{{ .Values.postgresql.external.sslmode }}{{ end -}}
{{- end -}}
{{/* NetworkPolicy peers of PostgreSQL (YAML list). */}}
{{- define "govmx.postgresPeers" -}}
{{- if .Values.postgresql.internal.enabled -}}
- podSelector:
    matchLabels:
      {{- include "govmx.selectorLabels" (dict "root" . "c" "postgresql") | nindent 6 }}
{{- else -}}
{{- toYaml .Values.postgresql.external.networkPolicyPeers -}}
{{- end -}}
{{- end -}}

{{/* Redis for Synapse workers: external (redis.enabled) or the in-chart Deployment. */}}
{{- define "govmx.redisInternal" -}}
{{- if and .Values.synapse.workers.enabled (not .Values.redis.enabled) }}true{{ end -}}
{{- end -}}
{{- define "govmx.redisHost" -}}
{{- if .Values.redis.enabled }}{{ .Values.redis.host }}{{ else }}{{ include "govmx.name" (dict "root" . "c" "redis") }}{{ end -}}
{{- end -}}
{{- define "govmx.redisPort" -}}
{{- if .Values.redis.enabled }}{{ .Values.redis.port }}{{ else }}6379{{ end -}}
{{- end -}}

{{/* Synapse workers (JSON list of {name, app, duty}): component synapse-<name>, worker_name <name>. */}}
{{- define "govmx.synapseWorkers" -}}
{{- $w := .Values.synapse.workers -}}
{{- toJson (list
  (dict "name" "federation-sender" "duty" "federation_sender" "resources" $w.federationSender.resources)
  (dict "name" "client" "duty" "client" "resources" $w.client.resources)) -}}
{{- end -}}

{{/* Selector labels of every Synapse pod (main and workers): YAML list of NetworkPolicy peers. */}}
{{- define "govmx.synapsePeers" -}}
- podSelector:
    matchLabels:
      {{- include "govmx.selectorLabels" (dict "root" . "c" "synapse") | nindent 6 }}
{{- if .Values.synapse.workers.enabled }}
{{- range $w := include "govmx.synapseWorkers" . | fromJsonArray }}
- podSelector:
    matchLabels:
      {{- include "govmx.selectorLabels" (dict "root" $ "c" (printf "synapse-%s" $w.name)) | nindent 6 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Init container writing Synapse's database block (password from its Secret) into a
     memory-backed emptyDir, so no password is ever in a ConfigMap, a value or an env var. */}}
{{- define "govmx.synapseDbInit" -}}
- name: render-db-config
  image: {{ include "govmx.image" (dict "root" . "image" .Values.images.synapse) }}
  imagePullPolicy: IfNotPresent
  {{- include "govmx.containerSecurityContext" (dict "uid" 10991) | nindent 2 }}
  command: ["python3", "-c"]
  args:
    - |
      import json, os
      password = open("/etc/synapse/postgresql/password").read().strip()
      args = {"host": os.environ["PGHOST"], "port": int(os.environ["PGPORT"]),
              "user": os.environ["PGUSER"], "dbname": os.environ["PGDATABASE"],
              "sslmode": os.environ["PGSSLMODE"], "password": password,
              "cp_min": 5, "cp_max": 10}
      {{- if and (not .Values.postgresql.internal.enabled) .Values.postgresql.external.caConfigMap }}
      args["sslrootcert"] = "/etc/synapse/postgresql-ca/ca.pem"
      {{- end }}
      with open("/run/synapse/database.yaml", "w") as f:
          json.dump({"database": {"name": "psycopg2", "args": args}}, f)
  env:
    - {name: PGHOST, value: {{ include "govmx.postgresHost" . | quote }}}
    - {name: PGPORT, value: {{ include "govmx.postgresPort" . | quote }}}
    - {name: PGUSER, value: {{ .Values.postgresql.external.user | quote }}}
    - {name: PGDATABASE, value: {{ .Values.postgresql.external.database | quote }}}
    - {name: PGSSLMODE, value: {{ include "govmx.postgresSslmode" . | quote }}}
  volumeMounts:
    - {name: postgresql, mountPath: /etc/synapse/postgresql, readOnly: true}
    - {name: run, mountPath: /run/synapse}
  resources:
    requests: {cpu: 10m, memory: 32Mi}
    limits: {cpu: 100m, memory: 64Mi}
{{- end -}}

{{/* Init container copying the govmx Synapse module into the "govmx-module" volume (on PYTHONPATH). */}}
{{- define "govmx.synapseModuleInit" -}}
- name: install-govmx-module
  image: {{ include "govmx.image" (dict "root" . "image" .Values.images.synapseModule) }}
  imagePullPolicy: IfNotPresent
  {{- include "govmx.containerSecurityContext" (dict "uid" 10991) | nindent 2 }}
  command: ["cp", "-R", "/opt/govmx-module/.", "/module/"]
  volumeMounts:
    - {name: govmx-module, mountPath: /module}
  resources:
    requests: {cpu: 10m, memory: 16Mi}
    limits: {cpu: 100m, memory: 64Mi}
{{- end -}}

{{/* Egress rules of every Synapse pod: PostgreSQL, Redis, the gate's CONNECT proxy (YAML list). */}}
{{- define "govmx.synapseEgress" -}}
- to:
    {{- include "govmx.postgresPeers" . | nindent 4 }}
  ports:
    - {protocol: TCP, port: {{ include "govmx.postgresPort" . }}}
{{- if include "govmx.redisInternal" . }}
- to:
    - podSelector:
        matchLabels:
          {{- include "govmx.selectorLabels" (dict "root" . "c" "redis") | nindent 10 }}
  ports:
    - {protocol: TCP, port: 6379}
{{- else if .Values.redis.enabled }}
- to:
    {{- toYaml .Values.redis.networkPolicyPeers | nindent 4 }}
  ports:
    - {protocol: TCP, port: {{ .Values.redis.port }}}
{{- end }}
- to:
    - podSelector:
        matchLabels:
          {{- include "govmx.selectorLabels" (dict "root" . "c" "federation-gate") | nindent 10 }}
  ports:
    - {protocol: TCP, port: 3128}
{{- end -}}
