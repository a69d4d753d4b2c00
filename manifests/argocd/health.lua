-- Argo CD health of apps/Deployment, aware of vane's releases.
-- A Deployment that opted in (label vane.io/canary: enabled) and has a release
-- in progress reports the release: Progressing while it walks timed steps or
-- promotes, Suspended only while it waits for a person (pause: {}), Degraded
-- when aborted or blocked. Anything else gets the stock Deployment logic
-- (spec.paused alone is not Suspended while vane holds a release).
local function stock(obj)
  local status = obj.status
  if status == nil then
    return {status = "Progressing", message = "Waiting for rollout to finish: status not observed"}
  end
  if obj.metadata.generation ~= nil and status.observedGeneration ~= nil and obj.metadata.generation > status.observedGeneration then
    return {status = "Progressing", message = "Waiting for rollout to finish: observed deployment generation less than desired generation"}
  end
  if obj.spec.paused then
    return {status = "Suspended", message = "Deployment is paused"}
  end
  if status.conditions ~= nil then
    for _, c in ipairs(status.conditions) do
      if c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded" then
        return {status = "Degraded", message = "Deployment exceeded its progress deadline"}
      end
    end
  end
  local replicas = obj.spec.replicas or 1
  local updated = status.updatedReplicas or 0
  local available = status.availableReplicas or 0
  if updated < replicas then
    return {status = "Progressing", message = "Waiting for rollout to finish: " .. updated .. " out of " .. replicas .. " new replicas have been updated..."}
  end
  if (status.replicas or 0) > updated then
    return {status = "Progressing", message = "Waiting for rollout to finish: " .. ((status.replicas or 0) - updated) .. " old replicas are pending termination..."}
  end
  if available < updated then
    return {status = "Progressing", message = "Waiting for rollout to finish: " .. available .. " of " .. updated .. " updated replicas are available..."}
  end
  return {status = "Healthy", message = ""}
end

local labels = obj.metadata.labels or {}
local annotations = obj.metadata.annotations or {}
local raw = annotations["vane.io/status"]
if labels["vane.io/canary"] ~= "enabled" or raw == nil then
  return stock(obj)
end
local phase = string.match(raw, '"phase"%s*:%s*"(%a+)"') or ""
local message = string.match(raw, '"message"%s*:%s*"(.-)"[,}]') or ""
if phase == "Paused" then
  return {status = "Suspended", message = "vane: " .. message}
elseif phase == "Aborted" or phase == "Degraded" then
  return {status = "Degraded", message = "vane: " .. message}
elseif phase == "Progressing" or phase == "Promoting" or phase == "RollingBack" then
  return {status = "Progressing", message = "vane: " .. message}
end
return stock(obj)
