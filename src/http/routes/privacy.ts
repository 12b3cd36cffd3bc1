import { Router } from 'express';
import type { Services } from '../../services.ts';
import { userId } from '../middleware.ts';
import { unix } from '../views.ts';

/** `PUT /api/image-batch-privacy {"accept": true}`, once per user, idempotent. */
export function privacyRoutes(s: Services): Router {
  const r = Router();
  r.put('/image-batch-privacy', async (req, res) => {
    await s.accounts.acceptPrivacy(userId(req), req.body);
    res.json({ success: true });
  });
  r.get('/image-batch-privacy', async (req, res) => {
    const user = await s.accounts.getUser(userId(req));
    const at = user.privacyAcceptedAt;
    res.json({ accepted: Boolean(at), accepted_at: unix(at) });
  });
  return r;
}
