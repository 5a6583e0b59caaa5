{{/*
The pod template of the Deployment and of the StatefulSet (direct mode with the write-ahead
log: then each pod mounts its own "wal" volume claim at the WAL directory).
*/}}
{{- define "prodloop.podTemplate" -}}
{{- $fullname := include "prodloop.fullname" . -}}
{{- $metricsTls := and .Values.service.metrics_tls_cert_file .Values.service.metrics_tls_key_file -}}
{{- $wal := include "prodloop.wal" . -}}
metadata:
  labels:
    {{- include "prodloop.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.serviceAccountName }}
  serviceAccountName: {{ . }}
  {{- end }}
  automountServiceAccountToken: false
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  # prodloop flushes, commits and exits within service.grace_seconds of SIGTERM
  terminationGracePeriodSeconds: {{ add (int (ceil .Values.service.grace_seconds)) (int .Values.terminationGraceExtraSeconds) }}
  containers:
    - name: prodloop
      image: {{ include "prodloop.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["run", "--config", "/etc/prodloop/prodloop.yaml"]
      workingDir: /var/lib/prodloop
      env:
        - name: HOME
          value: /tmp
        {{- if not .Values.alerts.replica_id }}
        - name: PRODLOOP_ALERTS__REPLICA_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- end }}
        {{- if and .Values.kafkaStaticMembership (not .Values.kafka.group_instance_id) }}
        # static group membership under the pod's name: a restarted container resumes at once
        - name: PRODLOOP_KAFKA__GROUP_INSTANCE_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- end }}
        {{- range $env, $s := (include "prodloop.secretSettings" . | fromJson) }}
        {{- with include "prodloop.secretEnvEntry" (list $env $s $fullname) | trim }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- end }}
        {{- if $wal }}
        # the write-ahead log on the pod's own volume (the StatefulSet's volumeClaimTemplates)
        - name: PRODLOOP_RECEIVER__DURABILITY
          value: wal
        - name: PRODLOOP_RECEIVER__WAL_DIR
          value: {{ include "prodloop.walDir" . | quote }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        {{- if .Values.receiver.grpc_enabled }}
        - name: otlp-grpc
          containerPort: {{ .Values.receiver.grpc_port }}
          protocol: TCP
        {{- end }}
        {{- if .Values.receiver.http_enabled }}
        - name: otlp-http
          containerPort: {{ .Values.receiver.http_port }}
          protocol: TCP
        {{- end }}
        - name: metrics
          containerPort: {{ .Values.service.metrics_port }}
          protocol: TCP
      livenessProbe:
        {{- include "prodloop.probe" (list .Values.livenessProbe $metricsTls) | nindent 8 }}
      readinessProbe:
        {{- include "prodloop.probe" (list .Values.readinessProbe $metricsTls) | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/prodloop
          readOnly: true
        {{- if .Values.files.existingConfigMap }}
        - name: files
          mountPath: /etc/prodloop-files
          readOnly: true
        {{- end }}
        - name: data
          mountPath: /var/lib/prodloop
        - name: tmp
          mountPath: /tmp
        {{- if $wal }}
        - name: wal
          mountPath: {{ include "prodloop.walDir" . }}
        {{- end }}
        {{- if .Values.history.gitTokenSecret }}
        - name: git-tokens
          mountPath: /etc/prodloop-git
          readOnly: true
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ $fullname }}
    {{- with .Values.files.existingConfigMap }}
    - name: files
      configMap:
        name: {{ . }}
    {{- end }}
    - name: data
      {{- if .Values.persistence.enabled }}
      persistentVolumeClaim:
        claimName: {{ default $fullname .Values.persistence.existingClaim }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    - name: tmp
      emptyDir:
        sizeLimit: {{ .Values.tmpSizeLimit }}
    {{- with .Values.history.gitTokenSecret }}
    - name: git-tokens
      secret:
        secretName: {{ . }}
        defaultMode: 0400
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
