{{/*
The Deployment of one FLTS service. Parameters (a dict):
  root       the chart root ($)
  component  object-name suffix and app.kubernetes.io/component (gateway, train-gru, ...)
  values     the component's values (image, env, resources, ...)
  module     the Python package run as `python -m <module>.service`
  port       HTTP port for an API service (gateway, inference); 0 for a worker (metrics on metricsPort)
  consumer   whether it is a Kafka consumer (gets the consumer ConfigMap)
  noReplicas omit spec.replicas (an HPA or a KEDA ScaledObject owns it)
*/}}
{{- define "flts.service" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $ctx := dict "root" $root "component" .component -}}
{{- $http := gt (int .port) 0 -}}
{{- $probePort := ternary "http" "metrics" $http -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "flts.componentName" $ctx }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "flts.labels" $ctx | nindent 4 }}
spec:
  {{- if not .noReplicas }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 3
  {{- with $v.strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "flts.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "flts.labels" $ctx | nindent 8 }}
      annotations:
        {{- include "flts.configChecksums" $root | nindent 8 }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- include "flts.podCommon" (dict "root" $root "values" $v) | nindent 6 }}
      securityContext:
        {{- include "flts.podSecurityContext" (dict "root" $root "values" $v) | nindent 8 }}
      {{- if $http }}
      terminationGracePeriodSeconds: 30
      {{- else }}
      # A consumer finishes or hands back its current message before it stops.
      terminationGracePeriodSeconds: 60
      {{- end }}
      {{- if and $v.spreadReplicas $http }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "flts.selectorLabels" $ctx | nindent 14 }}
        - maxSkew: 1
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "flts.selectorLabels" $ctx | nindent 14 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "flts.image" (dict "root" $root "image" $v.image) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["python", "-m", "{{ .module }}.service"]
          envFrom:
            {{- include "flts.envFrom" (dict "root" $root "consumer" .consumer) | nindent 12 }}
          env:
            {{- /* every trainer type shares the train user */}}
            {{- $user := ternary "train" .component (hasPrefix "train-" .component) }}
            {{- include "flts.s3CredentialsEnv" (dict "root" $root "user" $user) | nindent 12 }}
            {{- include "flts.kafkaCredentialsEnv" (dict "root" $root "user" $user) | nindent 12 }}
            {{- if $http }}
            - name: HTTP_HOST
              value: "0.0.0.0"
            - name: HTTP_PORT
              value: {{ .port | quote }}
            # /metrics is served on the HTTP port.
            - name: METRICS_PORT
              value: "0"
            {{- include "flts.authEnv" $root | nindent 12 }}
            {{- else }}
            - name: METRICS_PORT
              value: {{ $root.Values.metricsPort | quote }}
            {{- end }}
            {{- include "flts.envList" $v.env | trim | nindent 12 }}
          ports:
            {{- if $http }}
            - name: http
              containerPort: {{ .port }}
              protocol: TCP
            {{- else }}
            - name: metrics
              containerPort: {{ $root.Values.metricsPort }}
              protocol: TCP
            {{- end }}
          {{- if $http }}
          startupProbe:
            httpGet:
              path: {{ ($v.startupProbe).path | default "/healthz" }}
              port: http
            periodSeconds: {{ ($v.startupProbe).periodSeconds | default 2 }}
            failureThreshold: {{ ($v.startupProbe).failureThreshold | default 60 }}
            timeoutSeconds: 2
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          {{- else }}
          # A worker has no API: its Prometheus endpoint answering shows the process is alive
          # (it starts before the consumer, and the process exits when its consumer loop dies);
          # /healthz on the same port fails once its consumer stalls (CONSUMER_STALL_SECONDS).
          startupProbe:
            httpGet:
              path: /metrics
              port: metrics
            periodSeconds: 2
            failureThreshold: 90
            timeoutSeconds: 3
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
            periodSeconds: 20
            timeoutSeconds: 5
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /metrics
              port: metrics
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 3
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- include "flts.containerSecurityContext" (dict "root" $root "values" $v) | nindent 12 }}
          volumeMounts:
            - name: pipeline
              mountPath: /etc/flts
              readOnly: true
            - name: tmp
              mountPath: /tmp
            {{- if $http }}
            - name: api-keys
              mountPath: /etc/flts-auth
              readOnly: true
            {{- end }}
      volumes:
        - name: pipeline
          configMap:
            name: {{ include "flts.componentName" (dict "root" $root "component" "pipeline") }}
        {{- if $http }}
        - name: api-keys
          secret:
            secretName: {{ include "flts.auth.secretName" $root }}
            items:
              - key: api-keys.yaml
                path: api-keys.yaml
        {{- end }}
        {{- include "flts.tmpVolume" $root | nindent 8 }}
{{- end }}

{{/* The headless Service Prometheus finds a component's pods by (DNS or a ServiceMonitor).
(dict "root" $ "component" "x" "port" n "portName" "http"|"metrics") */}}
{{- define "flts.metricsService" -}}
{{- $ctx := dict "root" .root "component" .component -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "flts.componentName" $ctx }}-metrics
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "flts.labels" $ctx | nindent 4 }}
    flts.io/metrics: "true"
    flts.io/job: {{ ternary "workers" .component (eq .portName "metrics") }}
spec:
  clusterIP: None
  selector:
    {{- include "flts.selectorLabels" $ctx | nindent 4 }}
  ports:
    - name: {{ .portName }}
      port: {{ .port }}
      targetPort: {{ .portName }}
      protocol: TCP
{{- end }}
