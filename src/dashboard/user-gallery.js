/**
 * A batch's images, a page at a time from `GET /v1/image-batches/{id}/images`: the service reads
 * the output file from the page's cursor on, so the browser never holds the whole file. Each
 * entry is a signed link the <img> loads directly. Thumbnails are those full images scaled down
 * by CSS (the service makes no smaller copies), loaded lazily as they scroll into view.
 */
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { api, query } from './api.js';
import { errorNotice, html, Loading, Notice } from './components.js';

const PAGE_SIZE = 24;

export function Gallery({ batchId }) {
  const [items, setItems] = useState([]);
  const [next, setNext] = useState(null);
  const [loading, setLoading] = useState(true);
  const [notice, setNotice] = useState(null);
  const [filter, setFilter] = useState('');
  const [applied, setApplied] = useState('');
  const [open, setOpen] = useState(null);
  const base = `v1/image-batches/${encodeURIComponent(batchId)}/images`;

  const fetchPage = useCallback(
    async (after) => {
      setLoading(true);
      try {
        const page = await api(`${base}${query({ limit: PAGE_SIZE, after, custom_id: applied })}`);
        setItems((seen) => (after ? [...seen, ...page.data] : page.data));
        setNext(page.has_more ? page.next_cursor : null);
        setNotice(null);
      } catch (err) {
        setNotice(errorNotice(err));
      } finally {
        setLoading(false);
      }
    },
    [base, applied],
  );
  useEffect(() => {
    void fetchPage(null);
  }, [fetchPage]);

  const submit = (e) => {
    e.preventDefault();
    setApplied(filter.trim());
  };
  const clear = () => {
    setFilter('');
    setApplied('');
  };

  return html`<section class="gallery-section" aria-labelledby="gallery-title">
    <div class="section-head">
      <h2 id="gallery-title">Images</h2>
      <form class="inline-field" role="search" onSubmit=${submit}>
        <label for="gallery-filter">custom_id</label>
        <input
          id="gallery-filter"
          type="search"
          spellcheck=${false}
          placeholder="all requests"
          value=${filter}
          onInput=${(e) => setFilter(e.currentTarget.value)}
        />
        <button type="submit">Show</button>
        ${applied ? html`<button type="button" class="link" onClick=${clear}>Show all</button>` : null}
      </form>
    </div>
    <${Notice} notice=${notice} />
    ${
      items.length === 0 && !loading
        ? html`<p class="empty">${applied ? `No images for custom_id ${applied}.` : 'No images in this batch.'}</p>`
        : html`<ul class="gallery" aria-label=${applied ? `Images of ${applied}` : 'Images of this batch'}>
            ${items.map(
              (image) => html`<li key=${`${image.custom_id}/${image.index}`}>
                <button
                  type="button"
                  class="thumb"
                  onClick=${() => setOpen(image)}
                  aria-label=${`Open ${image.custom_id}, image ${image.index + 1}, full size`}
                >
                  <img src=${image.url} alt="" loading="lazy" decoding="async" onError=${markBroken} />
                </button>
                <span class="thumb-caption mono">${image.custom_id}${image.index ? ` #${image.index + 1}` : ''}</span>
              </li>`,
            )}
          </ul>`
    }
    ${loading ? html`<${Loading} what="Loading images" />` : null}
    ${
      next && !loading
        ? html`<button type="button" class="more" onClick=${() => fetchPage(next)}>Load more images</button>`
        : null
    }
    <${Lightbox} image=${open} onClose=${() => setOpen(null)} />
  </section>`;
}

/** A thumbnail that did not load (its link expired, the service was busy) says so instead of a broken icon. */
function markBroken(e) {
  e.currentTarget.closest('.thumb')?.classList.add('broken');
}

/** The full-size view: a modal <dialog> (Escape and the button close it, focus returns). */
function Lightbox({ image, onClose }) {
  const dialog = useRef(null);
  useEffect(() => {
    const d = dialog.current;
    if (!d) return;
    if (image && !d.open) d.showModal();
    if (!image && d.open) d.close();
  }, [image]);
  return html`<dialog ref=${dialog} class="lightbox" aria-labelledby="lightbox-title" onClose=${onClose}>
    ${
      image
        ? html`<div class="lightbox-head">
              <h2 id="lightbox-title">
                <span class="mono">${image.custom_id}</span>, image ${image.index + 1}
              </h2>
              <button type="button" onClick=${onClose}>Close</button>
            </div>
            <img class="full" src=${image.url} alt=${`Image ${image.index + 1} of request ${image.custom_id}`} />
            <p class="lightbox-foot">
              <span class="muted">${image.mime_type} · index ${image.index}</span>
              <a href=${image.url} target="_blank" rel="noopener noreferrer">Open the image in a new tab</a>
            </p>`
        : null
    }
  </dialog>`;
}
