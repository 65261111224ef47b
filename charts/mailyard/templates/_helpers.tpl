{{/*
Names, labels and the values every template shares. Helpers that take a
component are called with (dict "root" $ "component" "ingress").
*/}}

{{- define "mailyard.components" -}}
{{- list "ingress" "queue" "delivery" "bounce" | toJson -}}
{{- end -}}

{{/* The components KEDA can scale: the ones that consume a work queue. */}}
{{- define "mailyard.kedaComponents" -}}
{{- list "queue" "delivery" | toJson -}}
{{- end -}}

{{- define "mailyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mailyard.fullname" -}}
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

{{/* `<fullname>-<component>`: the Deployment, and for ingress the Service. */}}
{{- define "mailyard.componentName" -}}
{{- printf "%s-%s" (include "mailyard.fullname" .root | trunc 52 | trimSuffix "-") .component -}}
{{- end -}}

{{- define "mailyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels. `app.kubernetes.io/name` is the chart's name, not nameOverride:
`mailyard status` finds the Deployments by it.
*/}}
{{- define "mailyard.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mailyard.labels" -}}
helm.sh/chart: {{ include "mailyard.chart" . }}
{{ include "mailyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mailyard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "mailyard.componentSelectorLabels" -}}
{{ include "mailyard.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mailyard.componentLabels" -}}
{{ include "mailyard.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
metadata.annotations for every resource (commonAnnotations), or nothing; use as
{{- with include "mailyard.annotations" . }}{{ . | nindent 2 }}{{ end }}
*/}}
{{- define "mailyard.annotations" -}}
{{- with .Values.commonAnnotations -}}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{- define "mailyard.image" -}}
{{- $image := .Values.image -}}
{{- $name := $image.repository -}}
{{- if $image.registry -}}
{{- $name = printf "%s/%s" $image.registry $image.repository -}}
{{- end -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $name $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $name (default .Chart.AppVersion $image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "mailyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mailyard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
`mailyard status` in a pod (rbac.create): the component whose pods carry the
ServiceAccount token, and the Role it is bound to. bounce: it never faces the
internet (ingress does), never connects out (delivery does, and may run on the
host network for its egress addresses), KEDA never scales it to zero (queue and
delivery it may), and it holds no DKIM key (queue does).
*/}}
{{- define "mailyard.statusComponent" -}}bounce{{- end -}}

{{- define "mailyard.statusRoleName" -}}
{{- printf "%s-status" (include "mailyard.fullname" . | trunc 56 | trimSuffix "-") -}}
{{- end -}}

{{/* Where a pod's ServiceAccount token is found: the Kubernetes clients' in-cluster path. */}}
{{- define "mailyard.serviceAccountDir" -}}/var/run/secrets/kubernetes.io/serviceaccount{{- end -}}

{{/* The RabbitmqCluster's name, when the chart creates one. */}}
{{- define "mailyard.rabbitmqClusterName" -}}
{{- default (printf "%s-rabbitmq" (include "mailyard.fullname" . | trunc 50 | trimSuffix "-")) .Values.rabbitmq.cluster.name -}}
{{- end -}}

{{/*
The Secret that holds the broker URL, and its key ("" when there is none,
which validation.yaml reports).
*/}}
{{- define "mailyard.brokerSecretName" -}}
{{- if .Values.rabbitmq.cluster.enabled -}}
{{- printf "%s-default-user" (include "mailyard.rabbitmqClusterName" .) -}}
{{- else if .Values.rabbitmq.external.existingSecret -}}
{{- .Values.rabbitmq.external.existingSecret -}}
{{- else if .Values.rabbitmq.external.url -}}
{{- printf "%s-broker" (include "mailyard.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "mailyard.brokerSecretKey" -}}
{{- if .Values.rabbitmq.cluster.enabled -}}
connection_string
{{- else if .Values.rabbitmq.external.existingSecret -}}
{{- .Values.rabbitmq.external.existingSecretKey -}}
{{- else -}}
url
{{- end -}}
{{- end -}}

{{- define "mailyard.createBrokerSecret" -}}
{{- if and .Values.rabbitmq.external.enabled (not .Values.rabbitmq.cluster.enabled) .Values.rabbitmq.external.url (not .Values.rabbitmq.external.existingSecret) -}}
true
{{- end -}}
{{- end -}}

{{- define "mailyard.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "mailyard.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{- define "mailyard.dkimSecretName" -}}
{{- default (printf "%s-dkim" (include "mailyard.fullname" .)) .Values.dkim.existingSecret -}}
{{- end -}}

{{- define "mailyard.verpSecretName" -}}
{{- default (printf "%s-verp" (include "mailyard.fullname" .)) .Values.verp.existingSecret -}}
{{- end -}}

{{- define "mailyard.verpSecretKey" -}}
{{- if .Values.verp.existingSecret -}}
{{- .Values.verp.existingSecretKey -}}
{{- else -}}
secret
{{- end -}}
{{- end -}}

{{- define "mailyard.authSecretName" -}}
{{- default (printf "%s-auth" (include "mailyard.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* Where the ingress pods mount the TLS and AUTH Secrets, and the files the app reads there. */}}
{{- define "mailyard.tlsDir" -}}/etc/mailyard/tls{{- end -}}
{{- define "mailyard.authDir" -}}/etc/mailyard/auth{{- end -}}
{{- define "mailyard.authUsersKey" -}}users.yaml{{- end -}}
{{/* Where queue mounts the DKIM keys, and delivery the smarthost password and the CA bundle. */}}
{{- define "mailyard.dkimDir" -}}/etc/mailyard/dkim{{- end -}}
{{/* Where queue (which signs) and bounce (which verifies) mount the VERP secret. */}}
{{- define "mailyard.verpDir" -}}/etc/mailyard/verp{{- end -}}
{{- define "mailyard.smarthostDir" -}}/etc/mailyard/smarthost{{- end -}}
{{- define "mailyard.deliveryCADir" -}}/etc/mailyard/delivery-ca{{- end -}}

{{/*
dkim.keys as a JSON list of {domain, selector, file, pem}: `file` defaults to
<domain>.<selector>.pem, `pem` is "" when not given. The map of file name → PEM
that earlier charts took gives no domain or selector: [] here, and
validation.yaml explains the list form.
*/}}
{{- define "mailyard.dkimKeys" -}}
{{- $keys := list -}}
{{- if kindIs "slice" .Values.dkim.keys -}}
{{- range .Values.dkim.keys -}}
{{- $key := . | default dict -}}
{{- $domain := toString ($key.domain | default "") -}}
{{- $selector := toString ($key.selector | default "") -}}
{{- $file := toString ($key.file | default (printf "%s.%s.pem" $domain $selector)) -}}
{{- $keys = append $keys (dict "domain" $domain "selector" $selector "file" $file "pem" (toString ($key.pem | default ""))) -}}
{{- end -}}
{{- end -}}
{{- toJson $keys -}}
{{- end -}}

{{/* The Secret with the smarthost's password, and its key ("" when there is none). */}}
{{- define "mailyard.smarthostSecretName" -}}
{{- $smarthost := .Values.delivery.smarthost -}}
{{- if $smarthost.existingSecret -}}
{{- $smarthost.existingSecret -}}
{{- else if $smarthost.password -}}
{{- printf "%s-smarthost" (include "mailyard.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "mailyard.smarthostSecretKey" -}}
{{- ternary .Values.delivery.smarthost.existingSecretKey "password" (not (empty .Values.delivery.smarthost.existingSecret)) -}}
{{- end -}}

{{/* Whether delivery mounts a CA bundle (delivery.tlsCA.configMap or .secret). */}}
{{- define "mailyard.deliveryCA" -}}
{{- if or .Values.delivery.tlsCA.configMap .Values.delivery.tlsCA.secret -}}
true
{{- end -}}
{{- end -}}

{{/*
The configuration file: chart defaults, then `.Values.config` over them, then
what the chart's own values decide (ingress.proxyProtocol, delivery.tlsrpt; and
the files of the Secrets the chart mounts: ingress.tls, ingress.auth, dkim.keys,
bounce.verp_secret_file, delivery.smarthost.password_file, delivery.tls_ca_file;
and delivery.dane.enabled from delivery.dane). Rendered as YAML;
templates that need a value from it use (include "mailyard.config" . | fromYaml).
*/}}
{{- define "mailyard.config" -}}
{{- $defaults := dict
  "broker" (dict "prefix" "mailyard")
  "ingress" (dict "listen" (list (dict "host" "0.0.0.0" "port" 2525 "role" "mx")))
  "metrics" (dict "port" 9102)
-}}
{{- $config := mergeOverwrite $defaults (deepCopy .Values.config) -}}
{{- if not $config.hostname -}}
{{- $_ := unset $config "hostname" -}}
{{- end -}}
{{- $ingress := get $config "ingress" -}}
{{- $proxy := .Values.ingress.proxyProtocol -}}
{{- if $proxy.enabled -}}
{{- $section := dict "enabled" true -}}
{{- with $proxy.trustedNetworks -}}
{{- $_ := set $section "trusted_networks" . -}}
{{- end -}}
{{- $_ := set $ingress "proxy_protocol" (mergeOverwrite (deepCopy (get $ingress "proxy_protocol" | default dict)) $section) -}}
{{- end -}}
{{- /* A kubernetes.io/tls Secret holds tls.crt and tls.key; the app re-reads them when they change. */ -}}
{{- if .Values.tls.enabled -}}
{{- $dir := include "mailyard.tlsDir" . -}}
{{- $_ := set $ingress "tls" (dict "cert_file" (printf "%s/tls.crt" $dir) "key_file" (printf "%s/tls.key" $dir)) -}}
{{- end -}}
{{- if .Values.auth.enabled -}}
{{- $_ := set $ingress "auth" (dict "users_file" (printf "%s/%s" (include "mailyard.authDir" .) (include "mailyard.authUsersKey" .))) -}}
{{- end -}}
{{- /* One config dkim.keys entry per dkim.keys entry, its file where queue mounts the Secret. */ -}}
{{- if .Values.dkim.enabled -}}
{{- $keys := list -}}
{{- range include "mailyard.dkimKeys" . | fromJsonArray -}}
{{- $keys = append $keys (dict "domain" .domain "selector" .selector "key_file" (printf "%s/%s" (include "mailyard.dkimDir" $) .file)) -}}
{{- end -}}
{{- $_ := set $config "dkim" (dict "keys" $keys) -}}
{{- end -}}
{{- if .Values.verp.enabled -}}
{{- if not (kindIs "map" (get $config "bounce")) -}}
{{- $_ := set $config "bounce" dict -}}
{{- end -}}
{{- $_ := set (get $config "bounce") "verp_secret_file" (printf "%s/%s" (include "mailyard.verpDir" .) (include "mailyard.verpSecretKey" .)) -}}
{{- end -}}
{{- /*
delivery.smarthost.password_file and delivery.tls_ca_file: the files of what
delivery mounts. The smarthost itself (host, port, username, ...) is the user's,
in config.delivery.smarthost; without it there is no key to set (validation.yaml
says so).
*/ -}}
{{- $smarthost := dig "delivery" "smarthost" dict $config -}}
{{- if and (include "mailyard.smarthostSecretName" .) (kindIs "map" $smarthost) $smarthost -}}
{{- $_ := set $smarthost "password_file" (printf "%s/%s" (include "mailyard.smarthostDir" .) (include "mailyard.smarthostSecretKey" .)) -}}
{{- end -}}
{{- if include "mailyard.deliveryCA" . -}}
{{- if not (kindIs "map" (get $config "delivery")) -}}
{{- $_ := set $config "delivery" dict -}}
{{- end -}}
{{- $_ := set (get $config "delivery") "tls_ca_file" (printf "%s/%s" (include "mailyard.deliveryCADir" .) .Values.delivery.tlsCA.key) -}}
{{- end -}}
{{- /* delivery.dane.enabled from the chart's delivery.dane (validation.yaml refuses a contradiction). */ -}}
{{- if .Values.delivery.dane.enabled -}}
{{- if not (kindIs "map" (get $config "delivery")) -}}
{{- $_ := set $config "delivery" dict -}}
{{- end -}}
{{- $delivery := get $config "delivery" -}}
{{- $_ := set $delivery "dane" (mergeOverwrite (deepCopy (get $delivery "dane" | default dict)) (dict "enabled" true)) -}}
{{- end -}}
{{- /* delivery.tlsrpt: the chart's four values over any other key of config delivery.tlsrpt. */ -}}
{{- $tlsrpt := .Values.delivery.tlsrpt -}}
{{- if $tlsrpt.enabled -}}
{{- if not (kindIs "map" (get $config "delivery")) -}}
{{- $_ := set $config "delivery" dict -}}
{{- end -}}
{{- $delivery := get $config "delivery" -}}
{{- $section := dict "enabled" true "interval" (toString $tlsrpt.interval) "organization" $tlsrpt.organization "contact" $tlsrpt.contact -}}
{{- $_ := set $delivery "tlsrpt" (mergeOverwrite (deepCopy (get $delivery "tlsrpt" | default dict)) $section) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* The listeners of config.ingress.listen, as a JSON list of {port, role}. */}}
{{- define "mailyard.listeners" -}}
{{- $config := include "mailyard.config" . | fromYaml -}}
{{- $listeners := list -}}
{{- range $config.ingress.listen -}}
{{- $listeners = append $listeners (dict "port" (int .port) "role" (.role | default "mx")) -}}
{{- end -}}
{{- toJson $listeners -}}
{{- end -}}

{{/* The ports ingress listens on (from config.ingress.listen), as a JSON list. */}}
{{- define "mailyard.smtpPorts" -}}
{{- $ports := list -}}
{{- range include "mailyard.listeners" . | fromJsonArray -}}
{{- $ports = append $ports (int .port) -}}
{{- end -}}
{{- toJson $ports -}}
{{- end -}}

{{/*
The ingress Service port the helm test probe sends to: the first whose
targetPort is an mx listener (submission ports want AUTH, which the probe does
not do); 0 when there is none.
*/}}
{{- define "mailyard.probePort" -}}
{{- $mx := list -}}
{{- range include "mailyard.listeners" . | fromJsonArray -}}
{{- if eq .role "mx" -}}
{{- $mx = append $mx (int .port) -}}
{{- end -}}
{{- end -}}
{{- $found := 0 -}}
{{- range .Values.ingress.service.ports -}}
{{- if and (eq $found 0) (has (int .targetPort) $mx) -}}
{{- $found = int .port -}}
{{- end -}}
{{- end -}}
{{- $found -}}
{{- end -}}

{{- define "mailyard.metricsPort" -}}
{{- $config := include "mailyard.config" . | fromYaml -}}
{{- int $config.metrics.port -}}
{{- end -}}

{{/*
A duration as the app reads it ("90s", "5m", "1h30m", "250ms", a number of
seconds) → whole seconds, rounded up; "invalid" when it is not one.
*/}}
{{- define "mailyard.durationSeconds" -}}
{{- $text := lower (trim (toString .)) -}}
{{- if regexMatch "^[0-9]+(\\.[0-9]+)?$" $text -}}
{{- $text | float64 | ceil | int -}}
{{- else if regexMatch "^([0-9]+(\\.[0-9]+)?(ms|s|m|h|d|w))+$" $text -}}
{{- $units := dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 "d" 86400.0 "w" 604800.0 -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ms|s|m|h|d|w)" $text -1 -}}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" . -}}
{{- $total = addf $total (mulf ($number | float64) (get $units (trimPrefix $number .))) -}}
{{- end -}}
{{- $total | ceil | int -}}
{{- else -}}
invalid
{{- end -}}
{{- end -}}

{{/* A component's drain time after SIGTERM, in seconds. */}}
{{- define "mailyard.shutdownGraceSeconds" -}}
{{- $values := index .root.Values .component -}}
{{- $config := include "mailyard.config" .root | fromYaml -}}
{{- $grace := $values.shutdownGrace | default $config.shutdown_grace | default "25s" -}}
{{- include "mailyard.durationSeconds" $grace -}}
{{- end -}}

{{/* terminationGracePeriodSeconds: preStop sleep + drain + 10 s, unless set. */}}
{{- define "mailyard.terminationGracePeriodSeconds" -}}
{{- $values := index .root.Values .component -}}
{{- if ne (toString $values.terminationGracePeriodSeconds) "" -}}
{{- $values.terminationGracePeriodSeconds | int -}}
{{- else -}}
{{- $grace := include "mailyard.shutdownGraceSeconds" . -}}
{{- if eq $grace "invalid" -}}{{- $grace = "25" -}}{{- end -}}
{{- add ($values.preStopSleepSeconds | int) ($grace | int) 10 -}}
{{- end -}}
{{- end -}}

{{/*
The message classes of config.queue.classes (class → weight), as a JSON list:
transactional first (it always exists: mail without a class is transactional),
then the others in name order; transactional and bulk when the key is not set,
as the app's default.
*/}}
{{- define "mailyard.mailClasses" -}}
{{- $config := include "mailyard.config" . | fromYaml -}}
{{- $configured := dig "queue" "classes" dict $config | default (dict "transactional" 1 "bulk" 1) -}}
{{- $classes := list "transactional" -}}
{{- range $name, $_ := $configured -}}
{{- if ne (toString $name) "transactional" -}}
{{- $classes = append $classes (toString $name) -}}
{{- end -}}
{{- end -}}
{{- toJson $classes -}}
{{- end -}}

{{/*
The delivery lanes, as a JSON list of {class, queue} (queue without the prefix):
transactional mail on `delivery`, every other class on `delivery.<class>`.
*/}}
{{- define "mailyard.deliveryLanes" -}}
{{- $lanes := list -}}
{{- range include "mailyard.mailClasses" . | fromJsonArray -}}
{{- $queue := ternary "delivery" (printf "delivery.%s" .) (eq . "transactional") -}}
{{- $lanes = append $lanes (dict "class" . "queue" $queue) -}}
{{- end -}}
{{- toJson $lanes -}}
{{- end -}}

{{/* Whether KEDA scales this component. */}}
{{- define "mailyard.kedaScales" -}}
{{- if and .root.Values.keda.enabled (has .component (include "mailyard.kedaComponents" . | fromJsonArray)) -}}
true
{{- end -}}
{{- end -}}

{{/* Whether something other than the Deployment owns the replica count. */}}
{{- define "mailyard.autoscaled" -}}
{{- $values := index .root.Values .component -}}
{{- if or (include "mailyard.kedaScales" .) $values.autoscaling.enabled -}}
true
{{- end -}}
{{- end -}}

{{/* Whether the Prometheus Operator objects are rendered. */}}
{{- define "mailyard.podMonitorEnabled" -}}
{{- $monitor := .Values.monitoring.podMonitor -}}
{{- if and $monitor.enabled (or $monitor.force (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
true
{{- end -}}
{{- end -}}

{{- define "mailyard.prometheusRuleEnabled" -}}
{{- $rule := .Values.monitoring.prometheusRule -}}
{{- if and $rule.enabled (or $rule.force (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
true
{{- end -}}
{{- end -}}

{{/* The recipient of the helm test probe ("" when there is none). */}}
{{- define "mailyard.probeRecipient" -}}
{{- $config := include "mailyard.config" . | fromYaml -}}
{{- if .Values.tests.probeRecipient -}}
{{- .Values.tests.probeRecipient -}}
{{- else if $config.ingress.local_domains -}}
{{- printf "postmaster@%s" (first $config.ingress.local_domains) -}}
{{- end -}}
{{- end -}}

{{/*
Whether the helm test Pod is rendered. Not with the PROXY protocol: ingress then
wants a PROXY header on every connection, which the probe does not send.
*/}}
{{- define "mailyard.testEnabled" -}}
{{- if and .Values.tests.enabled (not .Values.ingress.proxyProtocol.enabled) -}}
true
{{- end -}}
{{- end -}}
