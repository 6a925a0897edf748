{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "switchboard.fullname" -}}
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

{{- define "switchboard.controlPlane" -}}{{ include "switchboard.fullname" . | trunc 49 | trimSuffix "-" }}-control-plane{{- end -}}
{{- define "switchboard.dataPlane" -}}{{ include "switchboard.fullname" . | trunc 52 | trimSuffix "-" }}-data-plane{{- end -}}

{{- define "switchboard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one plane: pass (list $ "control-plane") */}}
{{- define "switchboard.selector" -}}
app.kubernetes.io/name: {{ include "switchboard.name" (index . 0) }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "switchboard.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "switchboard.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "switchboard.fullname" .) -}}
{{- end -}}

{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "switchboard.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "switchboard.controlPlaneTlsSecret" -}}
{{- .Values.tls.controlPlaneSecret | default (printf "%s-tls" (include "switchboard.controlPlane" .)) -}}
{{- end -}}
{{- define "switchboard.dataPlaneTlsSecret" -}}
{{- .Values.tls.dataPlaneSecret | default (printf "%s-tls" (include "switchboard.dataPlane" .)) -}}
{{- end -}}

{{/* http or https: what probes and clients of the planes' HTTP listeners use. */}}
{{- define "switchboard.scheme" -}}{{ if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end }}{{- end -}}

{{/* The control plane's gRPC address as data planes dial it. */}}
{{- define "switchboard.controlPlaneUrl" -}}
{{ if .Values.tls.enabled }}https{{ else }}http{{ end }}://{{ include "switchboard.controlPlane" . }}:{{ .Values.controlPlane.ports.grpc }}
{{- end -}}

{{/* A secretKeyRef env entry: pass (list $ "ENV_NAME" "key") */}}
{{- define "switchboard.secretEnv" -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.secretName" (index . 0) }}
      key: {{ index . 2 }}
{{- end -}}

{{/* Rolls the pods when the chart's Secret changes. */}}
{{- define "switchboard.checksums" -}}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end -}}

{{- define "switchboard.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
serviceAccountName: {{ include "switchboard.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A Secret value: the given one; else what an earlier install generated; else a new one. */}}
{{- define "switchboard.secretValue" -}}
{{- $given := index . 0 }}{{ $kept := index . 1 }}{{ $key := index . 2 }}{{ $generated := index . 3 -}}
{{- if $given }}{{ $given | b64enc }}{{ else }}{{ get $kept $key | default ($generated | b64enc) }}{{ end -}}
{{- end -}}
