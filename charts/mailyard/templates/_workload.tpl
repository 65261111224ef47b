{{/*
The four services run the same image with the same shape; these templates are
included from each component's folder with (dict "root" $ "component" NAME).
*/}}

{{- define "mailyard.affinity" -}}
{{- $values := index .root.Values .component -}}
{{- if $values.affinity -}}
{{- toYaml $values.affinity -}}
{{- else if eq $values.podAntiAffinityPreset "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "mailyard.componentSelectorLabels" . | nindent 12 }}
{{- else if eq $values.podAntiAffinityPreset "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "mailyard.componentSelectorLabels" . | nindent 10 }}
{{- end -}}
{{- end -}}

{{- define "mailyard.deployment" -}}
{{- $root := .root -}}
{{- $component := .component -}}
{{- $values := index $root.Values $component -}}
{{- $preStop := int $values.preStopSleepSeconds -}}
{{- $affinity := include "mailyard.affinity" . -}}
{{- $mountTLS := and (eq $component "ingress") $root.Values.tls.enabled -}}
{{- $mountAuth := and (eq $component "ingress") $root.Values.auth.enabled -}}
{{- $mountDKIM := and (eq $component "queue") $root.Values.dkim.enabled -}}
{{- $mountVERP := and (has $component (list "queue" "bounce")) $root.Values.verp.enabled -}}
{{- $mountSmarthost := and (eq $component "delivery") (include "mailyard.smarthostSecretName" $root) -}}
{{- $mountCA := and (eq $component "delivery") (include "mailyard.deliveryCA" $root) -}}
{{- $mountToken := and (eq $component (include "mailyard.statusComponent" $root)) $root.Values.rbac.create -}}
{{- $ca := $root.Values.delivery.tlsCA -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "mailyard.componentName" . }}
  namespace: {{ $root.Release.Namespace | quote }}
  labels:
    {{- include "mailyard.componentLabels" . | nindent 4 }}
  {{- with include "mailyard.annotations" $root }}{{ . | nindent 2 }}{{ end }}
spec:
  {{- if not (include "mailyard.autoscaled" .) }}
  replicas: {{ $values.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "mailyard.componentSelectorLabels" . | nindent 6 }}
  strategy:
    {{- toYaml $values.updateStrategy | nindent 4 }}
  template:
    metadata:
      labels:
        {{- include "mailyard.componentLabels" . | nindent 8 }}
        {{- with $values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include "mailyard.config" $root | sha256sum }}
        {{- if include "mailyard.createBrokerSecret" $root }}
        checksum/broker: {{ include (print $root.Template.BasePath "/secrets/broker.yaml") $root | sha256sum }}
        {{- end }}
        {{- /*
        No checksum of the TLS, AUTH, DKIM and smarthost Secrets, nor of the CA
        bundle: the app re-reads the certificate, the users file, the DKIM keys,
        the smarthost password and the CA bundle when the kubelet updates the
        mounted files, so a certificate renewal, a new user, a rotated key or
        password never restarts a pod (and never drops SMTP sessions). The
        configuration file names the files, so adding or removing one rolls the pods.
        */}}
        {{- with $values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "mailyard.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
      {{- /* Service links would put MAILYARD_INGRESS_PORT & co. into the app's environment namespace. */}}
      enableServiceLinks: false
      {{- if and (eq $component "delivery") $values.hostNetwork }}
      {{- /* The nodes' addresses for config.delivery.source_addresses; cluster DNS all the same. */}}
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      {{- end }}
      terminationGracePeriodSeconds: {{ include "mailyard.terminationGracePeriodSeconds" . }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      {{- with $values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $affinity }}
      affinity:
        {{- . | nindent 8 }}
      {{- end }}
      {{- with $values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $component }}
          image: {{ include "mailyard.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [{{ $component | quote }}, "--config", "/etc/mailyard/mailyard.yaml"]
          env:
            {{- /* So that `kubectl exec ... -- mailyard status|suppression` reads the same file. */}}
            - name: MAILYARD_CONFIG
              value: /etc/mailyard/mailyard.yaml
            - name: MAILYARD_BROKER__URL
              valueFrom:
                secretKeyRef:
                  name: {{ include "mailyard.brokerSecretName" $root }}
                  key: {{ include "mailyard.brokerSecretKey" $root }}
            {{- with $values.shutdownGrace }}
            - name: MAILYARD_SHUTDOWN_GRACE
              value: {{ . | quote }}
            {{- end }}
            {{- with $values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: metrics
              containerPort: {{ include "mailyard.metricsPort" $root }}
              protocol: TCP
            {{- if eq $component "ingress" }}
            {{- range $index, $port := include "mailyard.smtpPorts" $root | fromJsonArray }}
            - name: {{ ternary "smtp" (printf "smtp-%d" (int $port)) (eq $index 0) }}
              containerPort: {{ $port }}
              protocol: TCP
            {{- end }}
            {{- end }}
          {{- with $values.readinessProbe }}
          {{- if .enabled }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: metrics
            {{- toYaml (omit . "enabled") | nindent 12 }}
          {{- end }}
          {{- end }}
          {{- with $values.livenessProbe }}
          {{- if .enabled }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
            {{- toYaml (omit . "enabled") | nindent 12 }}
          {{- end }}
          {{- end }}
          {{- if gt $preStop 0 }}
          lifecycle:
            preStop:
              exec:
                command: ["sleep", {{ $preStop | toString | quote }}]
          {{- end }}
          resources:
            {{- toYaml $values.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/mailyard/mailyard.yaml
              subPath: mailyard.yaml
              readOnly: true
            - name: tmp
              mountPath: /tmp
            {{- if $mountTLS }}
            - name: tls
              mountPath: {{ include "mailyard.tlsDir" $root }}
              readOnly: true
            {{- end }}
            {{- if $mountAuth }}
            - name: auth
              mountPath: {{ include "mailyard.authDir" $root }}
              readOnly: true
            {{- end }}
            {{- if $mountDKIM }}
            - name: dkim
              mountPath: {{ include "mailyard.dkimDir" $root }}
              readOnly: true
            {{- end }}
            {{- if $mountVERP }}
            - name: verp
              mountPath: {{ include "mailyard.verpDir" $root }}
              readOnly: true
            {{- end }}
            {{- if $mountSmarthost }}
            - name: smarthost
              mountPath: {{ include "mailyard.smarthostDir" $root }}
              readOnly: true
            {{- end }}
            {{- if $mountCA }}
            - name: delivery-ca
              mountPath: {{ include "mailyard.deliveryCADir" $root }}
              readOnly: true
            {{- end }}
            {{- if $mountToken }}
            - name: serviceaccount-token
              mountPath: {{ include "mailyard.serviceAccountDir" $root }}
              readOnly: true
            {{- end }}
            {{- with $values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ include "mailyard.fullname" $root }}-config
        - name: tmp
          emptyDir:
            {{- with $root.Values.tmpDir.medium }}
            medium: {{ . }}
            {{- end }}
            {{- with $root.Values.tmpDir.sizeLimit }}
            sizeLimit: {{ . }}
            {{- end }}
        {{- if $mountTLS }}
        - name: tls
          secret:
            secretName: {{ include "mailyard.tlsSecretName" $root }}
            defaultMode: 0440
        {{- end }}
        {{- if $mountAuth }}
        - name: auth
          secret:
            secretName: {{ include "mailyard.authSecretName" $root }}
            defaultMode: 0440
        {{- end }}
        {{- if $mountDKIM }}
        - name: dkim
          secret:
            secretName: {{ include "mailyard.dkimSecretName" $root }}
            defaultMode: 0440
        {{- end }}
        {{- if $mountVERP }}
        - name: verp
          secret:
            secretName: {{ include "mailyard.verpSecretName" $root }}
            defaultMode: 0440
        {{- end }}
        {{- if $mountSmarthost }}
        - name: smarthost
          secret:
            secretName: {{ include "mailyard.smarthostSecretName" $root }}
            defaultMode: 0440
        {{- end }}
        {{- if $mountCA }}
        - name: delivery-ca
          {{- if $ca.configMap }}
          configMap:
            name: {{ $ca.configMap }}
            defaultMode: 0444
          {{- else }}
          secret:
            secretName: {{ $ca.secret }}
            defaultMode: 0444
          {{- end }}
        {{- end }}
        {{- if $mountToken }}
        {{- /*
        What the kubelet would mount with automountServiceAccountToken, on this
        component only: a short-lived, rotated token for the API server, the
        cluster's CA and the namespace, where the Kubernetes client looks.
        */}}
        - name: serviceaccount-token
          projected:
            defaultMode: 0440
            sources:
              - serviceAccountToken:
                  path: token
                  expirationSeconds: 3600
              - configMap:
                  name: kube-root-ca.crt
                  items:
                    - key: ca.crt
                      path: ca.crt
              - downwardAPI:
                  items:
                    - path: namespace
                      fieldRef:
                        apiVersion: v1
                        fieldPath: metadata.namespace
        {{- end }}
        {{- with $values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end -}}

{{- define "mailyard.pdb" -}}
{{- $values := index .root.Values .component -}}
{{- if $values.pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "mailyard.componentName" . }}
  namespace: {{ .root.Release.Namespace | quote }}
  labels:
    {{- include "mailyard.componentLabels" . | nindent 4 }}
  {{- with include "mailyard.annotations" .root }}{{ . | nindent 2 }}{{ end }}
spec:
  {{- if ne (toString $values.pdb.minAvailable) "" }}
  minAvailable: {{ $values.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $values.pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "mailyard.componentSelectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{- define "mailyard.hpa" -}}
{{- $autoscaling := (index .root.Values .component).autoscaling -}}
{{- if and $autoscaling.enabled (not (include "mailyard.kedaScales" .)) }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "mailyard.componentName" . }}
  namespace: {{ .root.Release.Namespace | quote }}
  labels:
    {{- include "mailyard.componentLabels" . | nindent 4 }}
  {{- with include "mailyard.annotations" .root }}{{ . | nindent 2 }}{{ end }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "mailyard.componentName" . }}
  minReplicas: {{ $autoscaling.minReplicas }}
  maxReplicas: {{ $autoscaling.maxReplicas }}
  metrics:
    {{- range $resource := list "cpu" "memory" }}
    {{- $target := index $autoscaling (printf "target%sUtilizationPercentage" (ternary "CPU" "Memory" (eq $resource "cpu"))) | int }}
    {{- if gt $target 0 }}
    - type: Resource
      resource:
        name: {{ $resource }}
        target:
          type: Utilization
          averageUtilization: {{ $target }}
    {{- end }}
    {{- end }}
  {{- with $autoscaling.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
KEDA: one rabbitmq trigger per work queue the component consumes, on the
number of ready messages, reading the broker URL from the Secret through the
component's TriggerAuthentication. Delivery consumes one lane per message
class (`delivery`, `delivery.<class>`); KEDA's HPA follows the trigger that
asks for the most pods, so a bulk backlog scales delivery as much as a
transactional one.
*/}}
{{- define "mailyard.scaledObject" -}}
{{- if include "mailyard.kedaScales" . }}
{{- $values := index .root.Values .component -}}
{{- $config := include "mailyard.config" .root | fromYaml -}}
{{- $queues := list "inbound" "deferred" -}}
{{- if eq .component "delivery" -}}
{{- $queues = list -}}
{{- range include "mailyard.deliveryLanes" .root | fromJsonArray -}}
{{- $queues = append $queues .queue -}}
{{- end -}}
{{- end -}}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "mailyard.componentName" . }}
  namespace: {{ .root.Release.Namespace | quote }}
  labels:
    {{- include "mailyard.componentLabels" . | nindent 4 }}
  {{- with include "mailyard.annotations" .root }}{{ . | nindent 2 }}{{ end }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "mailyard.componentName" . }}
  pollingInterval: {{ $values.keda.pollingInterval }}
  cooldownPeriod: {{ $values.keda.cooldownPeriod }}
  minReplicaCount: {{ $values.autoscaling.minReplicas }}
  maxReplicaCount: {{ $values.autoscaling.maxReplicas }}
  {{- with $values.autoscaling.behavior }}
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        {{- toYaml . | nindent 8 }}
  {{- end }}
  triggers:
    {{- range $queues }}
    - type: rabbitmq
      name: {{ . | replace "." "-" }}
      metadata:
        protocol: amqp
        mode: QueueLength
        queueName: {{ printf "%s.%s" $config.broker.prefix . | quote }}
        value: {{ $values.keda.queueLength | toString | quote }}
        activationValue: {{ $values.keda.activationQueueLength | toString | quote }}
      authenticationRef:
        name: {{ include "mailyard.componentName" $ }}
    {{- end }}
{{- end }}
{{- end -}}

{{- define "mailyard.triggerAuthentication" -}}
{{- if include "mailyard.kedaScales" . }}
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: {{ include "mailyard.componentName" . }}
  namespace: {{ .root.Release.Namespace | quote }}
  labels:
    {{- include "mailyard.componentLabels" . | nindent 4 }}
  {{- with include "mailyard.annotations" .root }}{{ . | nindent 2 }}{{ end }}
spec:
  secretTargetRef:
    - parameter: host
      name: {{ include "mailyard.brokerSecretName" .root | quote }}
      key: {{ include "mailyard.brokerSecretKey" .root | quote }}
{{- end }}
{{- end -}}
