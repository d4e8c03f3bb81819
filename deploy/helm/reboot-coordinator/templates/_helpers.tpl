{{/*
Labels on every object's metadata: the kustomize base's part-of, plus Helm's standard
ones. Pod templates and selectors keep FLUO's `app` label only (selectors are immutable).
*/}}
{{- define "rc.labels" -}}
app.kubernetes.io/part-of: reboot-coordinator
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "rc.namespace" -}}
{{ .Values.namespace.name }}
{{- end -}}

{{/* A digest pins the image exactly, so it wins over the tag. */}}
{{- define "rc.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The leader election Lease: --lease-name, else the binary's default (FLUO's lock). */}}
{{- define "rc.leaseName" -}}
{{ .Values.operator.flags.leaseName | default "flatcar-linux-update-operator-lock" }}
{{- end -}}

{{/*
A flag's value as the binary reads it. Helm reads numbers as float64; the schema allows
only whole ones, printed without an exponent.
*/}}
{{- define "rc.scalar" -}}
{{- if kindIs "float64" . }}{{ int64 . }}{{ else }}{{ . }}{{ end -}}
{{- end -}}

{{/*
args entries for a flags map: the key in kebab-case is the flag's name; null is not
passed (the binary's default applies); a list gives the flag once per item (every list
flag of both binaries is repeatable).
*/}}
{{- define "rc.flags" -}}
{{- range $key, $value := . }}
{{- $flag := printf "--%s" (kebabcase $key) }}
{{- if kindIs "slice" $value }}
{{- range $value }}
- {{ printf "%s=%s" $flag (include "rc.scalar" .) | toJson }}
{{- end }}
{{- else if not (kindIs "invalid" $value) }}
- {{ printf "%s=%s" $flag (include "rc.scalar" $value) | toJson }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "rc.imagePullPolicy" -}}
{{- with .Values.image.pullPolicy }}
imagePullPolicy: {{ . }}
{{- end }}
{{- end -}}
