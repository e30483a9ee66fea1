{{/* ------------------------------------------------------------------ names and labels */}}

{{- define "flts.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped base name; components append "-<component>" (kept under 63 chars). */}}
{{- define "flts.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "flts.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of a component's objects: (dict "root" $ "component" "inference") */}}
{{- define "flts.componentName" -}}
{{- printf "%s-%s" (include "flts.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of a release (Deployments' selectors are immutable). */}}
{{- define "flts.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flts.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/* Standard labels on every object: (dict "root" $ "component" "x"); component may be empty. */}}
{{- define "flts.labels" -}}
helm.sh/chart: {{ include "flts.chart" .root }}
{{ include "flts.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: flts
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* ------------------------------------------------------------------ images and pods */}}

{{/* Image reference: (dict "root" $ "image" .Values.x.image); FLTS images default to appVersion. */}}
{{- define "flts.image" -}}
{{- $registry := .image.registry | default .root.Values.image.registry -}}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- if $registry -}}
{{ printf "%s/%s:%s" (trimSuffix "/" $registry) .image.repository $tag }}
{{- else -}}
{{ printf "%s:%s" .image.repository $tag }}
{{- end -}}
{{- end }}

{{- define "flts.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flts.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Pod-level fields every workload shares. (dict "root" $ "values" .Values.x) */}}
{{- define "flts.podCommon" -}}
serviceAccountName: {{ include "flts.serviceAccountName" .root }}
automountServiceAccountToken: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.values.nodeSelector | default .root.Values.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.values.tolerations | default .root.Values.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.values.affinity | default .root.Values.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* Pod securityContext: the chart default, merged with a component's own (e.g. the uid of a
third-party image). (dict "root" $ "values" .Values.x) */}}
{{- define "flts.podSecurityContext" -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.podSecurityContext) (.values.podSecurityContext | default dict)) }}
{{- end }}

{{- define "flts.containerSecurityContext" -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.containerSecurityContext) (.values.containerSecurityContext | default dict)) }}
{{- end }}

{{/* The writable scratch space of a read-only root filesystem. */}}
{{- define "flts.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{/* ------------------------------------------------------------------ endpoints */}}

{{- define "flts.kafka.bootstrapServers" -}}
{{- if .Values.kafka.enabled -}}
{{ printf "%s:9092" (include "flts.componentName" (dict "root" . "component" "kafka")) }}
{{- else -}}
{{ required "externalKafka.bootstrapServers is required when kafka.enabled=false" .Values.externalKafka.bootstrapServers }}
{{- end -}}
{{- end }}

{{- define "flts.s3.endpoint" -}}
{{- if .Values.minio.enabled -}}
{{ printf "http://%s:9000" (include "flts.componentName" (dict "root" . "component" "minio")) }}
{{- else -}}
{{ required "externalS3.endpoint is required when minio.enabled=false" .Values.externalS3.endpoint }}
{{- end -}}
{{- end }}

{{- define "flts.mlflow.trackingUri" -}}
{{- if .Values.mlflow.enabled -}}
{{ printf "http://%s:5000" (include "flts.componentName" (dict "root" . "component" "mlflow")) }}
{{- else -}}
{{ required "externalMlflow.trackingUri is required when mlflow.enabled=false" .Values.externalMlflow.trackingUri }}
{{- end -}}
{{- end }}

{{/* ------------------------------------------------------------------ secrets */}}

{{/* The Secret holding the S3 credentials (MinIO's root user, or the external service's keys). */}}
{{- define "flts.s3.secretName" -}}
{{ .Values.s3.existingSecret | default (include "flts.componentName" (dict "root" . "component" "s3")) }}
{{- end }}

{{/* The Secret holding the API keys (admin-api-key, api-keys.yaml). */}}
{{- define "flts.auth.secretName" -}}
{{ .Values.auth.existingSecret | default (include "flts.componentName" (dict "root" . "component" "auth")) }}
{{- end }}

{{- define "flts.postgresql.secretName" -}}
{{- if .Values.postgresql.enabled -}}
{{ .Values.postgresql.auth.existingSecret | default (include "flts.componentName" (dict "root" . "component" "postgresql")) }}
{{- else -}}
{{ required "externalPostgresql.existingSecret is required when postgresql.enabled=false and mlflow.enabled=true" .Values.externalPostgresql.existingSecret }}
{{- end -}}
{{- end }}

{{/*
A generated secret value that survives upgrades: the value already in the cluster when there is one
(lookup), else a new random one. (dict "root" $ "secret" name "key" key "length" n)
`helm template` has no cluster, so it renders a fresh value each time; `helm install/upgrade` keeps it.
*/}}
{{- define "flts.secretValue" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing (hasKey ($existing.data | default dict) .key) -}}
{{ index $existing.data .key }}
{{- else -}}
{{ randAlphaNum (int .length) | b64enc }}
{{- end -}}
{{- end }}

{{/* ------------------------------------------------------------------ FLTS service environment */}}

{{/* Environment of every FLTS process: shared ConfigMap(s) + credentials from the Secret.
(dict "root" $ "consumer" bool) */}}
{{- define "flts.envFrom" -}}
- configMapRef:
    name: {{ include "flts.componentName" (dict "root" .root "component" "env") }}
{{- if .consumer }}
- configMapRef:
    name: {{ include "flts.componentName" (dict "root" .root "component" "consumer-env") }}
{{- end }}
{{- end }}

{{/* The services' own MinIO users (flts/storage_users.py SERVICES; tests/deploy checks they agree): each,
flts-<user>, is allowed only its buckets. `init` creates them with the root key. */}}
{{- define "flts.s3Users" -}}
gateway preprocess train nonml eval inference mlflow
{{- end }}

{{/* The Secret with each user's secret (key <user>-secret-key). */}}
{{- define "flts.s3Users.secretName" -}}
{{ .Values.s3.usersExistingSecret | default (include "flts.componentName" (dict "root" . "component" "s3-users")) }}
{{- end }}

{{/* A process's S3 key. With the chart's MinIO each FLTS service and MLflow has its own user and only `init`
(user "root") holds the root key; with external S3 every process uses the s3 Secret's key.
(dict "root" $ "user" "gateway"|...|"root") */}}
{{- define "flts.s3CredentialsEnv" -}}
{{- if and .root.Values.minio.enabled (ne .user "root") }}
- name: AWS_ACCESS_KEY_ID
  value: flts-{{ .user }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "flts.s3Users.secretName" .root }}
      key: {{ .user }}-secret-key
{{- else }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "flts.s3.secretName" .root }}
      key: {{ .root.Values.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "flts.s3.secretName" .root }}
      key: {{ .root.Values.s3.secretAccessKeyKey }}
{{- end }}
{{- end }}

{{/* The services' own Kafka users with kafka.sasl.enabled (flts/kafka_users.py SERVICES; tests/deploy checks
they agree): each, flts-<user>, has ACLs for only its topics and groups. `init` (user "admin") creates them. */}}
{{- define "flts.kafkaUsers" -}}
gateway preprocess train nonml eval inference
{{- end }}

{{/* The Secret with the admin's and each user's Kafka password (keys admin-password, <user>-password). */}}
{{- define "flts.kafkaUsers.secretName" -}}
{{ .Values.kafka.sasl.existingSecret | default (include "flts.componentName" (dict "root" . "component" "kafka-users")) }}
{{- end }}

{{/* A process's Kafka login with kafka.sasl.enabled (nothing without). (dict "root" $ "user" "gateway"|...|"admin") */}}
{{- define "flts.kafkaCredentialsEnv" -}}
{{- if .root.Values.kafka.sasl.enabled }}
- name: KAFKA_SECURITY_PROTOCOL
  value: SASL_PLAINTEXT
- name: KAFKA_SASL_MECHANISM
  value: SCRAM-SHA-512
- name: KAFKA_SASL_USERNAME
  value: flts-{{ .user }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "flts.kafkaUsers.secretName" .root }}
      key: {{ .user }}-password
{{- end }}
{{- end }}

{{/* The HTTP APIs' keys: the switch, the principals file (mounted at /etc/flts-auth) and the admin key. */}}
{{- define "flts.authEnv" -}}
- name: AUTH_ENABLED
  value: {{ .Values.auth.enabled | quote }}
- name: AUTH_KEYS_FILE
  value: /etc/flts-auth/api-keys.yaml
- name: AUTH_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "flts.auth.secretName" . }}
      key: admin-api-key
{{- end }}

{{/* A values map of environment variables as a container env list, in a stable order. */}}
{{- define "flts.envList" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Pod annotations that roll the pods when their configuration changes. */}}
{{- define "flts.configChecksums" -}}
checksum/env: {{ include (print .Template.BasePath "/configmaps.yaml") . | sha256sum }}
checksum/pipeline: {{ include (print .Template.BasePath "/configmap-pipeline.yaml") . | sha256sum }}
{{- end }}

{{/* The pipeline config: values.pipeline when set (--set-file pipeline=my.yaml), else files/pipeline.yaml,
which is config/pipeline.yaml of the repository (tests/deploy/test_drift.py keeps them identical). */}}
{{- define "flts.pipelineConfig" -}}
{{- .Values.pipeline | default (.Files.Get "files/pipeline.yaml") }}
{{- end }}
