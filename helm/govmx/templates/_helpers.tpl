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
