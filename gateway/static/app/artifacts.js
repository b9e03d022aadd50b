// Files a reply made (charts, spreadsheets, reports): images shown inline, everything else as a download.
// Each is served by the gateway at /api/conversations/{conversation_id}/artifacts/{id} to those who may read
// the conversation; an SVG is shown through <img>, where its scripts never run.

export const ARTIFACT_TYPE = "application/vnd.mad.artifact+json";

const INLINE = new Set(["image/png", "image/svg+xml", "image/jpeg"]);
const ID = /^[0-9a-f]{64}$/;
const CONVERSATION = /^[A-Za-z0-9_-]{1,64}$/;

// The artifact references among an envelope's data parts (as stored in history).
export function artifactsOf(envelope) {
  const found = [];
  for (const part of (envelope && envelope.content) || []) {
    if (part.type === "data" && part.media_type === ARTIFACT_TYPE && part.value) found.push(part.value);
  }
  return found;
}

function pathOf(artifact) {
  if (!ID.test(artifact.id) || !CONVERSATION.test(artifact.conversation_id)) return null;
  return `/api/conversations/${artifact.conversation_id}/artifacts/${artifact.id}`;
}

function sizeText(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} kB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

// Append a figure per image and a download link per other file to `node` (a message body).
export function renderArtifacts(node, artifacts) {
  if (!artifacts || !artifacts.length) return;
  const list = document.createElement("div");
  list.className = "artifacts";
  for (const artifact of artifacts) {
    const path = pathOf(artifact);
    if (!path) continue;
    if (INLINE.has(artifact.content_type)) {
      const figure = document.createElement("figure");
      figure.className = "artifact-figure";
      const link = document.createElement("a");
      link.href = path;
      link.target = "_blank";
      link.rel = "noopener";
      const image = document.createElement("img");
      image.src = path;
      image.alt = artifact.name;
      image.loading = "lazy";
      link.append(image);
      const caption = document.createElement("figcaption");
      caption.className = "muted small";
      caption.textContent = `${artifact.name} · ${sizeText(artifact.size)}`;
      figure.append(link, caption);
      list.append(figure);
    } else {
      const link = document.createElement("a");
      link.className = "artifact-file";
      link.href = path;
      link.download = artifact.name;
      link.textContent = `⬇ ${artifact.name} (${sizeText(artifact.size)})`;
      list.append(link);
    }
  }
  if (list.childElementCount) node.append(list);
}
