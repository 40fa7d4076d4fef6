{{/*
Name of every object of the run: the release name (the run id), cut to 63 characters.
*/}}
{{- define "kubetune.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels: stable for the life of the run; the headless Service selects on them.
Kept apart from the descriptive labels below, which may grow.
*/}}
{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ include "kubetune.fullname" . }}
{{- end -}}

{{/*
Labels of the pods: nothing that changes with the chart's or kubetune's version, because a
Job's pod template is immutable. A release that relabelled the pods of existing Jobs would
make every GitOps sync of them fail.
*/}}
{{- define "kubetune.podLabels" -}}
{{ include "kubetune.selectorLabels" . }}
app.kubernetes.io/component: {{ if .Values.driver.enabled }}sweep-driver{{ else }}trainer{{ end }}
app.kubernetes.io/part-of: kubetune
app.kubernetes.io/managed-by: kubetune
kubetune.io/run-id: {{ .Values.run.id | trunc 63 | trimSuffix "-" | quote }}
kubetune.io/sweep: {{ .Values.run.sweep | trunc 63 | trimSuffix "-" | quote }}
{{- with .Values.run.task }}
kubetune.io/task: {{ . | quote }}
{{- end }}
{{- end -}}

{{/*
All labels of every object's own metadata (mutable): the pod labels plus the versions.
*/}}
{{- define "kubetune.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{ include "kubetune.podLabels" . }}
{{- end -}}

{{/*
Name of the multi-node headless Service, which is also the pods' subdomain. A Service name
is a DNS-1035 label (it starts with a letter); a run id may start with a digit, so such a
name gets the prefix "kt-". Pod hostnames (<job>-<index>) stay DNS-1123 labels.
*/}}
{{- define "kubetune.serviceName" -}}
{{- $name := include "kubetune.fullname" . -}}
{{- if regexMatch "^[a-z]" $name -}}
{{- $name -}}
{{- else -}}
{{- printf "kt-%s" $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Revision of the pod template this chart renders, from Chart.yaml's kubetune.io/pod-template
annotation: the pods record it in run.json (render.pod_template), and `kubetune reproduce`
compares it with the chart it renders with. The chart's own version stays off the pods.
*/}}
{{- define "kubetune.podTemplate" -}}
{{- printf "%s/%s" .Chart.Name (index .Chart.Annotations "kubetune.io/pod-template") -}}
{{- end -}}

{{/*
"true" when these values describe a run, so its ConfigMap, NetworkPolicy, Service and Job
render; empty when they only install the namespace's submitter RBAC (rbac.create without
run values). The run templates are wrapped in it.
*/}}
{{- define "kubetune.isRun" -}}
{{- if or .Values.run.id (not .Values.rbac.create) }}true{{ end -}}
{{- end -}}

{{/*
"true" for a run's trainer objects (Job, JobSet, Service); empty for a sweep driver, whose
Job is driver.yaml. The ConfigMap and NetworkPolicy serve both.
*/}}
{{- define "kubetune.isTrainer" -}}
{{- if and (include "kubetune.isRun" .) (not .Values.driver.enabled) }}true{{ end -}}
{{- end -}}

{{/*
"true" when these values describe the driver of a driven sweep (driver.enabled): its Job,
ServiceAccount, Role, RoleBinding, and a ConfigMap holding the sweep's spec.
*/}}
{{- define "kubetune.isDriver" -}}
{{- if and (include "kubetune.isRun" .) .Values.driver.enabled }}true{{ end -}}
{{- end -}}

{{/*
The driver's service account: the spec's resources.service_account (the identity that
reaches the store, e.g. IRSA), else one of its own, named after the driver.
*/}}
{{- define "kubetune.driverServiceAccount" -}}
{{- .Values.serviceAccountName | default (include "kubetune.fullname" .) -}}
{{- end -}}

{{/*
Refuse values that cannot make a working Job.
*/}}
{{- define "kubetune.validate" -}}
{{- if and .Values.rbac.create .Values.run.id }}
{{- fail "rbac.create installs the namespace's kubetune-submitter Role once, not per run: render it without run values (see the chart's values.yaml)" }}
{{- end -}}
{{- if not .Values.run.id }}{{ fail "run.id is required (kubetune render sets it)" }}{{ end -}}
{{- if not .Values.spec }}{{ fail "spec is required: the resolved job spec the trainer reads" }}{{ end -}}
{{- if not .Values.command }}{{ fail "command is required: the accelerate launch line" }}{{ end -}}
{{- end -}}

{{/*
Labels of the namespace's submitter RBAC: it belongs to no run, so no run or sweep labels,
and kubetune cancel, which deletes by run labels, never touches it.
*/}}
{{- define "kubetune.rbacLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: submitter-rbac
app.kubernetes.io/part-of: kubetune
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
