{{- define "promo.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "promo.labels" -}}
app.kubernetes.io/name: promotion-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: promotion-system
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "promo.selector" -}}
app.kubernetes.io/name: promotion-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "promo.backendsSecret" -}}
{{- default (printf "%s-backends" (include "promo.fullname" .)) .Values.backends.existingSecret -}}
{{- end -}}

{{- define "promo.securityContext" -}}
runAsNonRoot: true
runAsUser: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
