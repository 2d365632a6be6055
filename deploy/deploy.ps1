#Requires -Version 7.3
<#
.SYNOPSIS
Deploy (or update) the docker-compose stack on this host: the same steps,
checks and rollback as deploy/deploy.sh, for Windows (Docker Desktop) or any
host with PowerShell 7.

.DESCRIPTION
  Copy-Item .env.example .env      # fill in the secrets (deploy/generate-secrets.sh, or by hand)
  .\deploy\deploy.ps1

Steps, each printed as it runs:
  1. preflight   RAM, CPU cores, disk for models (minimum fails, below the
                 recommendation warns), GPU and NVIDIA runtime (absent: warn
                 and run on the CPU), Docker and Compose versions, .env with a
                 JWT secret of 32+ characters, the deployment's secrets and no
                 example values, TLS certificate, model directory
  2. backup      of the running deployment, if there is one (into BACKUP_DIR,
                 default var\backups: postgres.dump, postgres_data.tar.gz,
                 device_outputs.tar.gz, SHA256SUMS - the layout backup.sh writes)
  3. images      the current ones are kept as :rollback, then build and pull
  4. up          docker compose up -d
  5. verify      /health/ready through NGINX within 5 minutes, every container
                 running, smoke test (/api/device/list with a credential, API docs)
When a step from 3 on fails it rolls back by itself (previous images, then the
backup of step 2) and exits non-zero.

.PARAMETER DryRun
Run the preflight and show every action, change nothing.
.PARAMETER Force
Resources below the checklist's minimum warn instead of failing.
.PARAMETER Cpu
Run the workers on the CPU even where a GPU is found.
.PARAMETER SkipBackup
No backup before deploying (not recommended).
.PARAMETER EnvFile
Default: .env at the repository root.
.PARAMETER Timeout
Seconds to wait for readiness (default 300, the checklist's 5 minutes).
#>
[CmdletBinding()]
param(
  [switch]$DryRun,
  [switch]$Force,
  [switch]$Cpu,
  [switch]$SkipBackup,
  [string]$EnvFile,
  [int]$Timeout = 300
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest
# Arguments with quotes (the sh -c scripts below) reach native commands as written.
$PSNativeCommandArgumentPassing = 'Standard'
$Curl = if ($IsWindows) { 'curl.exe' } else { 'curl' }

# The checklist's server requirements (GB = 10^9 bytes, as hardware is sold).
$MinRamGb = 8
$RecommendedRamGb = 16
$MinCpuCores = 4
$RecommendedCpuCores = 8
$MinModelDiskGb = 100
$RecommendedModelDiskGb = 500
# Docker Engine with device reservations; Compose 2.24 for the !reset tag of docker-compose.cpu.yml.
$MinDockerVersion = '24.0'
$MinComposeVersion = '2.24.0'

$Root = (Resolve-Path (Join-Path $PSScriptRoot '..')).Path
if (-not $EnvFile) { $EnvFile = Join-Path $Root '.env' }
$EnvFile = [System.IO.Path]::GetFullPath($EnvFile, (Get-Location).Path)
$ProjectName = 'device-operations'
$HelperImage = if ($env:HELPER_IMAGE) { $env:HELPER_IMAGE } else { 'alpine:3.22' }
Set-Location $Root

function Say([string]$Message) { Write-Host "deploy: $Message" }
function Warn([string]$Message) { Write-Warning "deploy: $Message" }
function Fail([string]$Message) { Write-Host "deploy: error: $Message" -ForegroundColor Red; exit 1 }
function Step([string]$Message) { Write-Host ''; Write-Host "deploy: == $Message" }

# A command that changes something: printed first; only printed under -DryRun.
function Invoke-Action([string]$Command, [string[]]$Arguments) {
  $shown = "$Command $($Arguments -join ' ')" -replace '(://[^:/@]*:)[^@/]*@', '$1***@'
  if ($DryRun) { Write-Host "deploy: [dry-run] would run: $shown"; return }
  Write-Host "deploy: + $shown"
  $global:LASTEXITCODE = 0
  & $Command @Arguments
  # Cmdlets (New-Item, Remove-Item) throw on failure; native commands set an exit code.
  if ((Get-Command $Command).CommandType -eq 'Application' -and $LASTEXITCODE -ne 0) {
    throw "$Command $($Arguments[0]) failed with exit code $LASTEXITCODE"
  }
}

# .env is data, not a script: KEY=value lines, optional quotes, # comments.
function Read-EnvFile([string]$Path) {
  $values = @{}
  if (-not (Test-Path $Path)) { return $values }
  foreach ($line in Get-Content $Path) {
    if ($line -match '^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$') {
      $value = $Matches[2].Trim()
      if ($value -match '^"(.*)"\s*(#.*)?$' -or $value -match "^'(.*)'\s*(#.*)?$") { $value = $Matches[1] }
      else { $value = ($value -replace '\s+#.*$', '').Trim() }
      $values[$Matches[1]] = $value
    }
  }
  return $values
}
$Settings = Read-EnvFile $EnvFile
# As docker compose sees it: the environment wins over the env file.
function Setting([string]$Name) {
  $fromEnvironment = [Environment]::GetEnvironmentVariable($Name)
  if ($fromEnvironment) { return $fromEnvironment }
  if ($Settings.ContainsKey($Name)) { return $Settings[$Name] }
  return ''
}

function Compose([string[]]$Arguments) {
  & docker compose --project-directory $Root --env-file $EnvFile @Arguments
}
function Invoke-Compose([string[]]$Arguments) {
  Invoke-Action 'docker' (@('compose', '--project-directory', $Root, '--env-file', $EnvFile) + $Arguments)
}
function Test-VersionAtLeast([string]$Have, [string]$Want) {
  $parts = { param($text) @(("$text.0.0.0".Split('.') | Where-Object { $_ -ne '' } | Select-Object -First 3) | ForEach-Object { [int]$_ }) }
  $h = & $parts (($Have -replace '^v', '') -replace '[^0-9.].*$', '')
  $w = & $parts $Want
  return [version]::new($h[0], $h[1], $h[2]) -ge [version]::new($w[0], $w[1], $w[2])
}

# --- 1. preflight -------------------------------------------------------------
$Failures = [System.Collections.Generic.List[string]]::new()
function Check-Ok([string]$Text) { Write-Host "deploy:   ok    $Text" }
function Check-Warn([string]$Text) { Write-Host "deploy:   WARN  $Text" }
function Check-Fail([string]$What, [string]$Text) { Write-Host "deploy:   FAIL  ${What}: $Text"; $Failures.Add($What) }
function Resource-Short([string]$What, [string]$Text) {
  if ($Force) { Check-Warn "$Text (accepted with -Force)" } else { Check-Fail $What ($Text -replace "^$([regex]::Escape($What)): ", '') }
}
function Format-Gb([double]$Bytes) { return '{0:N1}' -f ($Bytes / 1e9) }

Step '1. preflight (DEPLOYMENT_CHECKLIST.md: infrastructure and configuration)'

$ramBytes = $null
if ($IsWindows) { $ramBytes = [double](Get-CimInstance Win32_ComputerSystem).TotalPhysicalMemory }
elseif (Test-Path /proc/meminfo) { $ramBytes = [double]((Get-Content /proc/meminfo | Select-String '^MemTotal:\s+(\d+)').Matches[0].Groups[1].Value) * 1024 }
elseif (Get-Command sysctl -ErrorAction SilentlyContinue) { $ramBytes = [double](& sysctl -n hw.memsize) }
if ($null -eq $ramBytes) { Check-Warn 'RAM: could not be measured' }
else {
  $shown = "RAM: $(Format-Gb $ramBytes) GB (minimum $MinRamGb GB, recommended $RecommendedRamGb GB)"
  if ($ramBytes -lt $MinRamGb * 1e9) { Resource-Short 'RAM' $shown }
  elseif ($ramBytes -lt $RecommendedRamGb * 1e9) { Check-Warn $shown }
  else { Check-Ok $shown }
}

$cores = [Environment]::ProcessorCount
$shown = "CPU cores: $cores (minimum $MinCpuCores, recommended $RecommendedCpuCores)"
if ($cores -lt $MinCpuCores) { Resource-Short 'CPU cores' $shown }
elseif ($cores -lt $RecommendedCpuCores) { Check-Warn $shown }
else { Check-Ok $shown }

$modelDir = Setting 'MODEL_HOST_DIRECTORY'
if (-not $modelDir) { $modelDir = 'var/models' }
$modelDir = [System.IO.Path]::GetFullPath($modelDir, $Root)
$existing = $modelDir
while (-not (Test-Path $existing)) { $existing = Split-Path $existing -Parent }
$freeBytes = [double]([System.IO.DriveInfo]::new((Get-Item $existing).FullName).AvailableFreeSpace)
$usedBytes = 0
if (Test-Path $modelDir) { $usedBytes = [double]((Get-ChildItem $modelDir -Recurse -File -ErrorAction SilentlyContinue | Measure-Object Length -Sum).Sum) }
$diskBytes = $freeBytes + $usedBytes
$shown = "storage for models: $(Format-Gb $diskBytes) GB free or in models at $modelDir (minimum $MinModelDiskGb GB, recommended $RecommendedModelDiskGb GB)"
if ($diskBytes -lt $MinModelDiskGb * 1e9) { Resource-Short 'storage for models' $shown }
elseif ($diskBytes -lt $RecommendedModelDiskGb * 1e9) { Check-Warn $shown }
else { Check-Ok $shown }

$haveDocker = $false
if (-not (Get-Command docker -ErrorAction SilentlyContinue)) {
  Check-Fail 'Docker' "not installed (no docker command on PATH); install Docker Engine $MinDockerVersion or later (Docker Desktop on Windows)"
  Check-Fail 'Docker Compose' "needs Docker; install the Compose plugin $MinComposeVersion or later with it"
}
else {
  $dockerVersion = (& docker version --format '{{.Server.Version}}' 2>$null)
  if ($LASTEXITCODE -ne 0 -or -not $dockerVersion) { Check-Fail 'Docker' 'the docker command cannot reach a Docker Engine (is it running?)' }
  elseif (-not (Test-VersionAtLeast $dockerVersion $MinDockerVersion)) { Check-Fail 'Docker' "Engine $dockerVersion is older than $MinDockerVersion" }
  else { Check-Ok "Docker Engine $dockerVersion (minimum $MinDockerVersion)"; $haveDocker = $true }
  $composeVersion = (& docker compose version --short 2>$null)
  if ($LASTEXITCODE -ne 0 -or -not $composeVersion) { Check-Fail 'Docker Compose' "the Compose plugin is missing; install $MinComposeVersion or later" }
  elseif (-not (Test-VersionAtLeast $composeVersion $MinComposeVersion)) { Check-Fail 'Docker Compose' "$composeVersion is older than $MinComposeVersion (needed for docker-compose.cpu.yml's !reset)" }
  else { Check-Ok "Docker Compose $composeVersion (minimum $MinComposeVersion)" }
}

$useGpu = $false
if ($Cpu) { Check-Warn 'GPU: not used (-Cpu): the workers run on the CPU' }
else {
  $gpus = 0
  if (Get-Command nvidia-smi -ErrorAction SilentlyContinue) { $gpus = @(& nvidia-smi -L 2>$null | Where-Object { $_ -match '^GPU' }).Count }
  if ($gpus -eq 0) { Check-Warn 'GPU: no NVIDIA GPU found (nvidia-smi): the workers run on the CPU (docker-compose.cpu.yml)' }
  elseif (-not $haveDocker) { Check-Warn "GPU: $gpus found, NVIDIA runtime not checked (no Docker Engine)" }
  else {
    $runtimes = (& docker info --format '{{json .Runtimes}}' 2>$null) -join ''
    # Docker Desktop with WSL 2 passes GPUs through without a named nvidia runtime.
    $hook = Get-Command nvidia-container-runtime-hook -ErrorAction SilentlyContinue
    if ($runtimes -notmatch 'nvidia' -and -not $hook -and -not $IsWindows) { Check-Warn "GPU: $gpus found but no NVIDIA Container Toolkit for Docker (install it, then nvidia-ctk runtime configure): the workers run on the CPU" }
    else { Check-Ok "GPU: $gpus NVIDIA GPU(s) and the NVIDIA runtime"; $useGpu = $true }
  }
}

if (-not (Test-Path $EnvFile)) {
  Check-Fail '.env' "$EnvFile is missing: cp .env.example .env, fill it in (deploy/generate-secrets.sh adds random secrets)"
}
else {
  Check-Ok ".env: $EnvFile"
  $problems = [System.Collections.Generic.List[string]]::new()
  foreach ($name in 'JWT_SECRET', 'WORKER_TOKEN') {
    $value = Setting $name
    if (-not $value) { $problems.Add("$name is empty (at least 32 characters)") }
    elseif ($value.Length -lt 32) { $problems.Add("$name has $($value.Length) characters, at least 32 are needed") }
  }
  $adminKey = Setting 'ADMIN_API_KEY'
  if ($adminKey -and $adminKey.Length -lt 32) { $problems.Add("ADMIN_API_KEY has $($adminKey.Length) characters, at least 32 are needed") }
  foreach ($name in 'POSTGRES_PASSWORD', 'REDIS_PASSWORD', 'GRAFANA_ADMIN_PASSWORD', 'SEQ_ADMIN_PASSWORD') {
    if (-not (Setting $name)) { $problems.Add("$name is empty") }
  }
  foreach ($name in 'POSTGRES_PASSWORD', 'REDIS_PASSWORD') {
    $value = Setting $name
    if ($value -and $value -cnotmatch '^[A-Za-z0-9._~-]+$') { $problems.Add("$name may hold only letters, digits and - _ . ~ (it is used inside a URL)") }
  }
  $examplePattern = '(change[-_ ]?me|changeit|replace[-_ ]?me|placeholder|your[-_]|example\.(com|org|net)|user:password@|^<.*>$|^x{3,}$|^(secret|password)$)'
  foreach ($name in $Settings.Keys) {
    $value = Setting $name
    if ($value -and $value -match $examplePattern) { $problems.Add("$name still holds an example value") }
  }
  if ($problems.Count -eq 0) { Check-Ok 'secrets: JWT_SECRET, WORKER_TOKEN, POSTGRES_PASSWORD, REDIS_PASSWORD, GRAFANA_ADMIN_PASSWORD, SEQ_ADMIN_PASSWORD set; no example values' }
  else { foreach ($problem in $problems) { Check-Fail '.env' $problem } }
}

$makeCertificate = $false
$certDir = Setting 'TLS_CERTIFICATE_DIRECTORY'
$certFile = Setting 'TLS_CERTIFICATE_FILE'; if (-not $certFile) { $certFile = 'fullchain.pem' }
$keyFile = Setting 'TLS_CERTIFICATE_KEY_FILE'; if (-not $keyFile) { $keyFile = 'privkey.pem' }
if (-not $certDir) {
  $certDir = Join-Path $Root 'nginx/certs'
  if (-not ((Test-Path (Join-Path $certDir $certFile)) -and (Test-Path (Join-Path $certDir $keyFile)))) {
    Check-Warn 'TLS certificate: none in nginx/certs; a self-signed one will be made (clients will warn; see nginx/certs/README.md)'
    $makeCertificate = $true
  }
  else { Check-Ok "TLS certificate: $(Join-Path $certDir $certFile)" }
}
else {
  $certDir = [System.IO.Path]::GetFullPath($certDir, $Root)
  if (-not ((Test-Path (Join-Path $certDir $certFile)) -and (Test-Path (Join-Path $certDir $keyFile)))) {
    Check-Fail 'TLS certificate' "$(Join-Path $certDir $certFile) and $(Join-Path $certDir $keyFile) must exist (TLS_CERTIFICATE_DIRECTORY)"
  }
  else { Check-Ok "TLS certificate: $(Join-Path $certDir $certFile)" }
}

if (-not (Test-Path $modelDir)) { Check-Warn "models: $modelDir does not exist; it is created empty and the workers serve no model until one is put there" }
elseif (-not (Get-ChildItem $modelDir -Force | Select-Object -First 1)) { Check-Warn "models: $modelDir is empty; the workers serve no model until one is put there" }
else { Check-Ok "models: $(@(Get-ChildItem $modelDir).Count) in $modelDir (mounted read-only)" }

if (-not (Get-Command $Curl -CommandType Application -ErrorAction SilentlyContinue)) { Check-Fail 'curl' 'not installed (the deployment checks use it)' }

$composeFiles = Setting 'COMPOSE_FILE'
if (-not $composeFiles) { $composeFiles = 'docker-compose.yml' }
$separator = if ($IsWindows) { ';' } else { ':' }
if (-not $useGpu -and ($composeFiles.Split($separator) -notcontains 'docker-compose.cpu.yml')) { $composeFiles = "$composeFiles${separator}docker-compose.cpu.yml" }
$env:COMPOSE_FILE = $composeFiles
Say "compose files: $composeFiles"

if ($Failures.Count -gt 0) {
  Fail "preflight failed: $($Failures.Count) problem(s) ($(($Failures | Select-Object -Unique) -join ', ')). Nothing was changed."
}
if ($DryRun) { Say '[dry-run] preflight passed; what a deployment would do:' }

# --- checks through NGINX ---------------------------------------------------------
function Get-EdgeUrl {
  if ($env:DEPLOY_URL) { return $env:DEPLOY_URL.TrimEnd('/') }
  $port = Setting 'HTTPS_PORT'; if (-not $port) { $port = '443' }
  return "https://127.0.0.1:$port"
}
# curl (curl.exe on Windows): the certificate may be self-signed; what is checked is the deployment.
function Invoke-Edge([string[]]$Arguments) { & $Curl --silent --show-error --insecure --max-time 10 @Arguments }

function Wait-Ready([int]$Seconds) {
  $url = "$(Get-EdgeUrl)/health/ready"
  if ($DryRun) { Say "[dry-run] would wait up to ${Seconds}s for 200 from $url"; return $true }
  Say "waiting up to ${Seconds}s for 200 from $url"
  $deadline = (Get-Date).AddSeconds($Seconds)
  $status = '000'
  while ($true) {
    $status = (Invoke-Edge @('--output', [System.IO.Path]::GetTempFileName(), '--write-out', '%{http_code}', $url) 2>$null)
    if ($status -eq '200') { Say 'ready'; return $true }
    if ((Get-Date) -ge $deadline) { Warn "not ready after ${Seconds}s (last answer: HTTP $status); see: docker compose logs gateway worker nginx"; return $false }
    Start-Sleep -Seconds ([Math]::Min(5, [Math]::Max(1, ($deadline - (Get-Date)).TotalSeconds)))
  }
}

function Test-Containers {
  if ($DryRun) { Say '[dry-run] would check that every container runs (docker compose ps)'; return $true }
  $bad = @()
  foreach ($line in (Compose @('ps', '--all', '--format', '{{.Service}} {{.State}} {{.Health}}'))) {
    if (-not $line) { continue }
    Say "  $line"
    if ($line -notmatch ' running') { $bad += ($line -split ' ')[0] }
  }
  if ($bad.Count -gt 0) { Warn "not running: $($bad -join ' ')"; return $false }
  return $true
}

function Test-Smoke {
  $base = Get-EdgeUrl
  if ($DryRun) {
    Say "[dry-run] would GET $base/api/device/list with a credential (SMOKE_API_KEY, else a 5-minute token from the gateway container)"
    Say "[dry-run] would GET $base/api-docs/ and $base/api-docs/openapi.json"
    return $true
  }
  $key = Setting 'SMOKE_API_KEY'
  if ($key) { $auth = @('-H', "X-API-Key: $key") }
  else {
    $token = (Compose @('exec', '-T', 'gateway', 'node', 'gateway/dist/cli/issue-token.js', '--sub', 'deploy-smoke-test', '--scope', 'inference', '--ttl', '300'))
    if ($LASTEXITCODE -ne 0 -or -not $token) { Warn 'could not get a token from the gateway container'; return $false }
    $auth = @('-H', "Authorization: Bearer $($token.Trim())")
  }
  $bodyFile = [System.IO.Path]::GetTempFileName()
  $status = Invoke-Edge (@('--output', $bodyFile, '--write-out', '%{http_code}') + $auth + @("$base/api/device/list"))
  $body = Get-Content $bodyFile -Raw -ErrorAction SilentlyContinue
  if ($status -ne '200' -or -not ($body -match '"devices"')) { Warn "GET /api/device/list answered HTTP ${status}: $body"; return $false }
  Say 'GET /api/device/list: 200 with a device list'
  foreach ($path in '/api-docs/', '/api-docs/openapi.json') {
    $status = Invoke-Edge @('--location', '--output', $bodyFile, '--write-out', '%{http_code}', "$base$path")
    if ($status -ne '200') { Warn "GET $path answered HTTP $status"; return $false }
    Say "GET ${path}: 200"
  }
  return $true
}

# --- backup and restore (the layout of backup.sh; files copied out of the
# container, since PowerShell may re-encode a binary stream through a pipe) --
function New-Backup {
  $backupRoot = Setting 'BACKUP_DIR'; if (-not $backupRoot) { $backupRoot = Join-Path $Root 'var/backups' }
  $backupRoot = [System.IO.Path]::GetFullPath($backupRoot, $Root)
  $name = (Get-Date).ToUniversalTime().ToString("yyyyMMdd'T'HHmmss'Z'")
  $final = Join-Path $backupRoot $name
  $partial = "$final.partial"
  Invoke-Action 'New-Item' @('-ItemType', 'Directory', '-Force', $partial)
  Invoke-Compose @('exec', '-T', 'postgres', 'sh', '-c', 'rm -rf /tmp/backup && mkdir -p /tmp/backup && pg_dump --format=custom --no-owner -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f /tmp/backup/postgres.dump && pg_basebackup -U "$POSTGRES_USER" --pgdata=/tmp/backup/base --format=tar --wal-method=fetch --gzip --checkpoint=fast')
  Invoke-Compose @('cp', 'postgres:/tmp/backup/postgres.dump', (Join-Path $partial 'postgres.dump'))
  Invoke-Compose @('cp', 'postgres:/tmp/backup/base/base.tar.gz', (Join-Path $partial 'postgres_data.tar.gz'))
  Invoke-Compose @('exec', '-T', 'postgres', 'rm', '-rf', '/tmp/backup')
  Invoke-Action 'docker' @('run', '--rm', '-v', "${ProjectName}_device_outputs:/source:ro", '-v', "${partial}:/backup", $HelperImage, 'tar', '-C', '/source', '-czf', '/backup/device_outputs.tar.gz', '.')
  if ($DryRun) { Say "[dry-run] would write SHA256SUMS and rename $partial to $final"; return $null }
  $sums = Get-ChildItem $partial -File | Sort-Object Name | ForEach-Object { "$((Get-FileHash $_.FullName -Algorithm SHA256).Hash.ToLower())  $($_.Name)" }
  Set-Content -Path (Join-Path $partial 'SHA256SUMS') -Value $sums -Encoding ascii
  Move-Item $partial $final
  $retention = Setting 'BACKUP_RETENTION'; if (-not $retention) { $retention = 7 }
  $old = @(Get-ChildItem $backupRoot -Directory | Where-Object { $_.Name -match '^\d{8}T\d{6}Z' -and $_.Name -notlike '*.partial' } | Sort-Object Name)
  if ($old.Count -gt [int]$retention) { $old[0..($old.Count - [int]$retention - 1)] | ForEach-Object { Invoke-Action 'Remove-Item' @('-Recurse', '-Force', $_.FullName) } }
  Say "backup: $final"
  return $final
}

function Restore-Backup([string]$Folder) {
  $services = @(Compose @('config', '--services') | Where-Object { $_ -and $_ -ne 'postgres' })
  if ($services.Count -gt 0) { Invoke-Compose (@('stop') + $services) }
  Invoke-Compose @('up', '-d', '--wait', 'postgres')
  Invoke-Compose @('cp', (Join-Path $Folder 'postgres.dump'), 'postgres:/tmp/restore.dump')
  Invoke-Compose @('exec', '-T', 'postgres', 'sh', '-c', 'pg_restore --clean --if-exists --no-owner --exit-on-error --single-transaction -U "$POSTGRES_USER" -d "$POSTGRES_DB" /tmp/restore.dump; status=$?; rm -f /tmp/restore.dump; exit $status')
  Invoke-Action 'docker' @('run', '--rm', '-v', "${ProjectName}_device_outputs:/target", '-v', "${Folder}:/backup:ro", $HelperImage, 'sh', '-c', 'find /target -mindepth 1 -delete && tar xzf /backup/device_outputs.tar.gz -C /target')
}

# --- 2-5 with automatic rollback -----------------------------------------------------
$currentStep = ''
$backupFolder = $null
$keptImages = @()
$armed = $false
try {
  $currentStep = 'certificate'
  if ($makeCertificate) {
    # The openssl command of nginx/scripts/make-self-signed-cert.sh, run in a container: Windows has no openssl.
    $certs = Join-Path $Root 'nginx/certs'
    Invoke-Action 'docker' @('run', '--rm', '-v', "${certs}:/certs", $HelperImage, 'sh', '-c', 'apk add --no-cache openssl >/dev/null && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /certs/privkey.pem -out /certs/fullchain.pem -days 30 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1')
  }

  $currentStep = 'backup'
  Step '2. backup of the running deployment'
  if ($SkipBackup) { Warn 'no backup (-SkipBackup): a failed deployment rolls back the images only' }
  elseif (-not (Compose @('ps', '--status', 'running', '--quiet', 'postgres') 2>$null)) { Say 'no running deployment (postgres is not running): nothing to back up' }
  else { $backupFolder = New-Backup }

  $currentStep = 'images'
  Step '3. images: keep the current ones as :rollback, then build and pull'
  foreach ($image in @(Compose @('config', '--images') | Where-Object { $_ -like 'device-operations/*' } | Sort-Object -Unique)) {
    & docker image inspect $image *> $null
    if ($LASTEXITCODE -eq 0) {
      Invoke-Action 'docker' @('image', 'tag', $image, "$($image.Substring(0, $image.LastIndexOf(':'))):rollback")
      $keptImages += $image
    }
  }
  if ($keptImages.Count -eq 0) { Say 'no previous images (first deployment)' }
  $armed = $true
  Invoke-Compose @('build', '--pull')
  Invoke-Compose @('pull', '--ignore-buildable', '--quiet')

  $currentStep = 'up'
  Step '4. up'
  Invoke-Compose @('up', '-d', '--remove-orphans')

  Step "5. verify through NGINX ($(Get-EdgeUrl))"
  $currentStep = 'readiness'
  if (-not (Wait-Ready $Timeout)) { throw 'not ready' }
  $currentStep = 'containers'
  if (-not (Test-Containers)) { throw 'containers not running' }
  $currentStep = 'smoke test'
  if (-not (Test-Smoke)) { throw 'smoke test failed' }
  $armed = $false
}
catch {
  if (-not $armed) { Fail "step '$currentStep' failed: $($_.Exception.Message)" }
  Warn "step '$currentStep' failed: rolling back"
  if ($keptImages.Count -eq 0 -and -not $backupFolder) {
    Warn 'first deployment: there is nothing to roll back to; the stack is left as it is for inspection (docker compose ps, docker compose logs)'
    exit 1
  }
  try {
    foreach ($image in $keptImages) { Invoke-Action 'docker' @('image', 'tag', "$($image.Substring(0, $image.LastIndexOf(':'))):rollback", $image) }
    if ($backupFolder) { Restore-Backup $backupFolder }
    Invoke-Compose @('up', '-d', '--remove-orphans')
    if (Wait-Ready $Timeout) { Warn "rolled back to the previous images$(if ($backupFolder) { " and the backup $backupFolder" }); the previous deployment serves again" }
    else { Warn 'rolled back, but the previous deployment is not ready either: docker compose ps; docker compose logs; deploy/rollback.sh for the checklist''s manual plan' }
  }
  catch { Warn "rollback failed too: $($_.Exception.Message); follow deploy/rollback.sh (the checklist's manual plan)" }
  exit 1
}

Step 'done'
if ($DryRun) { Say '[dry-run] nothing was changed' }
else {
  Say "deployed: $(Get-EdgeUrl) (API docs at /api-docs). Monitoring on this host: Prometheus :9090, Grafana :3000, Seq :5341."
  if ($backupFolder) { Say "backup taken before this deployment: $backupFolder" }
}
