{{/* Routing table shared by the Ingress and the HTTPRoute: list of [host, pathPrefix, service, port]. */}}
{{- define "govmx.routes" -}}
{{- $synapse := include "govmx.name" (dict "root" . "c" "synapse") -}}
{{- $scanner := include "govmx.name" (dict "root" . "c" "media-scanner") -}}
{{- $host := .Values.publicHost -}}
{{- $routes := list -}}
{{/* Every media path (uploads included) through the scanner; it forwards what is not an upload. */}}
{{- range (list "/_matrix/media" "/_matrix/client/v1/media" "/_matrix/media_proxy") -}}
{{- $routes = append $routes (list $host . $scanner 8080) -}}
{{- end -}}
{{- if .Values.synapse.workers.enabled -}}
{{- $client := include "govmx.name" (dict "root" . "c" "synapse-client") -}}
{{/* Sync paths to the client worker (longest prefix wins over /_matrix). */}}
{{- range (list "/_matrix/client/v3/sync" "/_matrix/client/r0/sync" "/_matrix/client/v3/events" "/_matrix/client/r0/events" "/_matrix/client/v3/initialSync" "/_matrix/client/r0/initialSync") -}}
{{- $routes = append $routes (list $host . $client 8008) -}}
{{- end -}}
{{- end -}}
{{- range (list "/_matrix" "/_synapse/client" "/.well-known/matrix") -}}
{{- $routes = append $routes (list $host . $synapse 8008) -}}
{{- end -}}
{{- if ne .Values.serverName .Values.publicHost -}}
{{- $routes = append $routes (list .Values.serverName "/.well-known/matrix" $synapse 8008) -}}
{{- end -}}
{{- toJson $routes -}}
{{- end -}}

{{- define "govmx.federationRoutes" -}}
{{- $gate := include "govmx.name" (dict "root" . "c" "federation-gate") -}}
{{- $host := .Values.ingress.federationHost | default .Values.publicHost -}}
{{- toJson (list (list $host "/_matrix/federation" $gate 8448) (list $host "/_matrix/key" $gate 8448)) -}}
{{- end -}}
